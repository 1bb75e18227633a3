#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages cairn needs to build and test.
#
# Idempotent: when every package is already installed it does nothing (no
# apt-get at all, so it also works offline). Otherwise it runs apt-get update
# and installs only the missing ones, with sudo when not root.
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config clang
    libczmq-dev libzmq3-dev libsodium-dev
    libprotobuf-c-dev protobuf-c-compiler
    liblmdb-dev lmdb-utils
    libcurl4-openssl-dev libssl-dev
    libdeflate-dev zlib1g-dev
    libmicrohttpd-dev libyajl-dev libcmocka-dev
    curl python3
    dpkg-dev
    iproute2 nftables
)

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    echo "Usage: $(basename "$0")"
    echo "Installs (apt-get) whichever of these Debian packages are missing:"
    echo "  ${PACKAGES[*]}"
    exit 0
fi

command -v dpkg-query >/dev/null || {
    echo "install-deps.sh: this script needs a Debian-based system (dpkg/apt-get)" >&2
    exit 1
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps.sh: all ${#PACKAGES[@]} packages are installed"
    exit 0
fi

sudo_cmd=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null; then
        sudo_cmd=(sudo)
    else
        echo "install-deps.sh: not root and no sudo; install these as root: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"

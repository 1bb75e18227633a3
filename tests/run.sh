#!/usr/bin/env bash
# run.sh: installs the dependencies, builds with ASan + UBSan into
# ./build-asan and runs every test (unit and integration) with ctest.
# Exits non-zero if anything fails. This is what .ci/run runs.
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    echo "Usage: tests/run.sh"
    echo "Installs dependencies, builds ./build-asan with sanitizers, runs all tests."
    echo "Extra ctest arguments may follow, e.g.: tests/run.sh -L unit"
    exit 0
fi

deploy/install-deps.sh

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCAIRN_SANITIZE=ON
cmake --build build-asan -j"$(nproc)"

# Sanitizer reports fail the test that triggered them.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

ctest --test-dir build-asan --output-on-failure "$@"

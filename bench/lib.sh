# bench/lib.sh: what the single-process benchmarks share (sourced, not run).
#
# bench_cluster_up NAME: makes DIR (a fresh /tmp/cairn-NAME.XXXXXX), arranges
# for the cluster and DIR to go at exit, starts a one-region local cluster in
# DIR/cluster with the programs of $BUILD, and sources its cluster.env.
# Needs REPO and BUILD.
bench_cluster_up() {
    DIR=$(mktemp -d "/tmp/cairn-$1.XXXXXX")
    export CAIRN_BIN_DIR=$BUILD
    trap '"$REPO/deploy/local-cluster.sh" down --dir "$DIR/cluster" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
    "$REPO/deploy/local-cluster.sh" up --dir "$DIR/cluster" --regions us-east-1 --interval 300 >/dev/null
    # shellcheck source=/dev/null
    source "$DIR/cluster/cluster.env"
}

#!/usr/bin/env bash
# Lifecycle benchmark of issue #3: builds zonecert and zonecert-bench in release, then
# runs the benchmark with the server on CPUs $SERVER_CPU (all of them by default: it keeps
# the first for its requests and runs the lifecycle on the others) and the benchmark (load,
# sampler, and its DNS server and progress poller in the idle class) on CPU $BENCH_CPU,
# the server's request CPU. Prints a table of figures with PASS/FAIL.
#
# Usage: bench/lifecycle.sh [zonecert-bench flags...]   e.g. --hosts 10000 --stored-packs 0
# Knobs (environment): SERVER_CPU=0-N BENCH_CPU=0 SKIP_BUILD=1 CARGO_TARGET_DIR (where cargo builds)
# Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SERVER_CPU=${SERVER_CPU:-0-$(($(nproc) - 1))}
BENCH_CPU=${BENCH_CPU:-0}

command -v taskset >/dev/null && command -v chrt >/dev/null || { echo "missing taskset or chrt (util-linux)" >&2; exit 1; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$root" && cargo build --release -p zonecert -p zonecert-bench >&2)
fi
target=${CARGO_TARGET_DIR:-$root/target}
exec taskset -c "$BENCH_CPU" "$target/release/zonecert-bench" --server-cpu "$SERVER_CPU" "$@"

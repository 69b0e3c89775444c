#!/usr/bin/env bash
# ACME benchmark of issue 13: builds zonecert and zonecert-acme-bench in release, then runs
# the floor (a plain instant-acme loop) and zonecert (`zonecert serve --acme
# lets_encrypt=<Pebble>`, on CPUs $SERVER_CPU) against one Pebble (Debian's `pebble`,
# PEBBLE_VA_NOSLEEP=1) and one loopback DNS server, and prints the figures with PASS/FAIL:
# throughput ratio to the floor, order -> active median against the floor's single order,
# GET verification p99 during the run against idle. Pebble, the DNS server and the
# benchmark's own customers stand in for other machines: they run in the idle scheduling
# class (--stand-ins-idle false: the normal class) on the server's CPUs but the first,
# where zonecert's request threads run (--stand-ins-cpus; `all` shares every CPU).
#
# Usage: bench/acme.sh [zonecert-acme-bench flags...]   e.g. --packs 1000 --concurrency 32
# Knobs (environment): SERVER_CPU=0-N SKIP_BUILD=1 CARGO_TARGET_DIR (where cargo builds)
# Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SERVER_CPU=${SERVER_CPU:-0-$(($(nproc) - 1))}

command -v taskset >/dev/null && command -v chrt >/dev/null || { echo "missing taskset or chrt (util-linux)" >&2; exit 1; }
command -v pebble >/dev/null || { echo "missing pebble (Debian: apt-get install pebble)" >&2; exit 1; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$root" && cargo build --release --locked -p zonecert -p zonecert-bench >&2)
fi
target=${CARGO_TARGET_DIR:-$root/target}
exec "$target/release/zonecert-acme-bench" --server-cpu "$SERVER_CPU" "$@"

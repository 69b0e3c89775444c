#!/usr/bin/env bash
# PostgreSQL benchmark of issue 14: builds zonecert and zonecert-pg-bench in release, then
# (bench/lifecycle/src/postgres.rs) in one run, on a throwaway PostgreSQL cluster (testkit's
# PgCluster: fsync and synchronous_commit off, so the figures are CPU costs):
#  1. GET verification on PostgreSQL against SQLite: the same zones (stored on SQLite,
#     moved with `zonecert db copy`), the same wrk load, alternated; the server (and all of
#     PostgreSQL) on CPU $SERVER_CPU, wrk on $LOAD_CPU. Prints req/s, p50, p99, server CPU
#     per request and the ratio (target: PostgreSQL >= 0.8 x SQLite).
#  2. Lifecycle throughput with 1, 2 and 3 nodes on one PostgreSQL: time until every pack
#     is validated and active, checks/s and issuances/s, the nodes' and PostgreSQL's CPU
#     seconds, the database's share, and an estimate of the nodes one primary carries.
#
# Usage: flock /work/wt/bench.lock bench/postgres.sh [zonecert-pg-bench flags...]
#   e.g. --zones 2000 --packs 3000 --nodes 1,2,3 --rounds 2
# Knobs (environment): SERVER_CPU=0 LOAD_CPU=1 NODES_CPU=0-1 SKIP_BUILD=1 CARGO_TARGET_DIR
# Needs wrk (installed with apt-get when missing, as verification.sh does) and PostgreSQL
# (Debian: apt-get install postgresql). Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NODES_CPU=${NODES_CPU:-0-$(($(nproc) - 1))}

if ! command -v wrk >/dev/null; then
  echo "== installing wrk" >&2
  apt-get update >/dev/null && apt-get install -y wrk >/dev/null
fi
command -v taskset >/dev/null && command -v chrt >/dev/null || { echo "missing taskset or chrt (util-linux)" >&2; exit 1; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$root" && cargo build --release --locked -p zonecert -p zonecert-bench \
    --bin zonecert --bin zonecert-pg-bench >&2)
fi
target=${CARGO_TARGET_DIR:-$root/target}
exec "$target/release/zonecert-pg-bench" --wrk-script "$here/wrk_report.lua" \
  --server-cpu "$SERVER_CPU" --load-cpu "$LOAD_CPU" --nodes-cpu "$NODES_CPU" "$@"

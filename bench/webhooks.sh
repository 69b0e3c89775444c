#!/usr/bin/env bash
# Webhook fan-out benchmark of issue #15: 10,000 events in the outbox of a fresh
# database with 3 endpoints on loopback (receivers in the benchmark program, verifying
# every signature), delivered by the release `zonecert serve` started on it; prints the
# time until every endpoint holds every event (target: under 10 s from the server's
# start) and PASS/FAIL. The program is bench/lifecycle/src/webhooks.rs.
#
# Usage: bench/webhooks.sh   (from the repository root or anywhere)
# Knobs (environment): EVENTS=10000 ENDPOINTS=3 EVENTS_PER_PACK=4 SKIP_BUILD=1
#   ZONECERT_BIN=<binary to measure instead of target/release/zonecert>
#   BENCH_BIN=<the program instead of target/release/zonecert-webhook-bench>
# Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${ZONECERT_BIN:-$root/target/release/zonecert}
bench=${BENCH_BIN:-$root/target/release/zonecert-webhook-bench}
if [[ -z "${SKIP_BUILD:-}" ]]; then
  echo "== building (release)" >&2
  (cd "$root" && cargo build --release -p zonecert -p zonecert-bench --bin zonecert --bin zonecert-webhook-bench >&2)
fi
[[ -x "$bin" ]] || { echo "no $bin; build it first" >&2; exit 1; }
[[ -x "$bench" ]] || { echo "no $bench; build it first" >&2; exit 1; }
exec "$bench" --zonecert "$bin" --events "${EVENTS:-10000}" --endpoints "${ENDPOINTS:-3}" \
  --events-per-pack "${EVENTS_PER_PACK:-4}"

#!/usr/bin/env bash
# Instructions per request of GET /client/v4/zones/{zone}/ssl/verification (issue 15),
# zonecert against the bare axum floor (zonecert-bare-floor serving the same bytes),
# counted by valgrind's callgrind: unlike req/s and CPU time, the count does not move
# with the machine's load, so it compares builds on a shared machine. Each server runs
# under callgrind with instrumentation off, takes WARMUP requests (every zone's answer
# rendered and cached), then instrumentation goes on, 200 more requests, the counters
# are zeroed, and REQUESTS requests are counted (every thread of the server, user space
# only: system calls count as their few instructions of the C library).
#
# Usage: bench/verification_instructions.sh   (from the repository root or anywhere)
# Knobs (environment): ZONES=2000 WARMUP=12000 REQUESTS=2000 CONNECTIONS=4
#   SKIP_BUILD=1 ZONECERT_BIN=... FLOOR_BIN=... KEEP=<dir to keep the profiles in>
# Needs valgrind (callgrind_control, callgrind_annotate). Everything on 127.0.0.1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
ZONES=${ZONES:-2000}
WARMUP=${WARMUP:-12000}
REQUESTS=${REQUESTS:-2000}
CONNECTIONS=${CONNECTIONS:-4}
bin=${ZONECERT_BIN:-$root/target/release/zonecert}
floor_bin=${FLOOR_BIN:-$root/target/release/zonecert-bare-floor}
log() { printf '== %s\n' "$*" >&2; }
for tool in valgrind callgrind_control callgrind_annotate python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building (release)"
  (cd "$root" && cargo build --release -p zonecert -p zonecert-bench --bin zonecert --bin zonecert-bare-floor >&2)
fi

work=$(mktemp -d)
out=${KEEP:-$work}
mkdir -p "$out"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export ZONECERT_LIFECYCLE=false

wait_listening() { # file -> prints the base URL
  for _ in $(seq 1 600); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then sed -n 's/^listening on //p' "$1" | head -n1; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server did not start" >&2; exit 1
}
token() { # name permission
  "$bin" token create --name "$1" --permission "$2" --data-dir "$work/data" --output json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])'
}

log "loading $ZONES zones x 2 packs x 2 hosts"
"$bin" init --data-dir "$work/data" >/dev/null
writer=$("$bin" token create --name loader --permission "Zone Write" \
  --permission "SSL and Certificates Write" --data-dir "$work/data" --output json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
reader=$(token reader "SSL and Certificates Read")
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --rate-limit off >"$work/load.out" 2>"$work/load.err" &
pid=$!
base=$(wait_listening "$work/load.out")
python3 "$here/load_zones.py" "$base/client/v4" "$writer" "$ZONES" "$work/ids.txt" >&2
curl -fsS -H "Authorization: Bearer $reader" \
  "$base/client/v4/zones/$(head -n1 "$work/ids.txt")/ssl/verification" >"$work/answer.json"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

count() { # label, server command... -> prints instructions per request
  local label=$1; shift
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.$label.%p" \
    "$@" >"$work/$label.out" 2>"$work/$label.err" &
  pid=$!
  local base
  base=$(wait_listening "$work/$label.out")
  local client=(python3 "$here/verification_instructions.py" "$base" "$reader" "$work/ids.txt")
  "${client[@]}" "$WARMUP" "$CONNECTIONS"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "${client[@]}" 200 "$CONNECTIONS"
  callgrind_control -z "$pid" >/dev/null 2>&1
  "${client[@]}" "$REQUESTS" "$CONNECTIONS"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local file="$out/callgrind.$label.$pid.1"
  pid=""
  local total
  total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ && !d {gsub(",", "", $1); print $1; d=1}')
  log "$label: $total instructions for $REQUESTS requests ($file)"
  echo $(( total / REQUESTS ))
}

log "zonecert under callgrind"
z=$(count zonecert "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --rate-limit off)
log "the bare floor under callgrind"
f=$(count bare_floor "$floor_bin" --body "$work/answer.json")
echo
printf '%-40s %12s\n' "server" "instr/req"
printf '%-40s %12s\n' "bare axum, same bytes (floor)" "$f"
printf '%-40s %12s\n' "GET .../ssl/verification (zonecert)" "$z"
python3 -c "import sys; z, f = int(sys.argv[1]), int(sys.argv[2]); print(f'instructions per request, zonecert / floor: {z / f:.2f}')" "$z" "$f"

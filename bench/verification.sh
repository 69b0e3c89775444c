#!/usr/bin/env bash
# Benchmark of issues #2 and #15: GET /client/v4/zones/{random zone}/ssl/verification
# with a token against a server holding ZONES zones of 2 packs x 2 hosts, next to two
# floors: the static GET /healthz of the same binary, and a bare axum route
# (bench/lifecycle/src/bare.rs, zonecert-bare-floor) serving the bytes of one of
# zonecert's verification answers for every zone, asked the same random URLs. The
# verification run is made twice, with metrics on (the default) and `--metrics false`,
# in the same run, for the cost of measuring. Prints req/s, p50, p99, the ratios, the
# server's peak RSS, and PASS/FAIL per target.
#
# Usage: bench/verification.sh          (from the repository root or anywhere)
# Knobs (environment): ZONES=10000 DURATION=10 WARMUP=3 CONNECTIONS=64 WRK_THREADS=1
#   SERVER_CPU=0 LOAD_CPU=1 DATA_DIR=<dir to keep/reuse the loaded data> SKIP_BUILD=1
#   ZONECERT_BIN=<binary to measure instead of target/release/zonecert>
#   FLOOR_BIN=<bare floor binary instead of target/release/zonecert-bare-floor>
# Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
ZONES=${ZONES:-10000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
# One wrk thread for the one load core: two threads on one core take turns, and a
# response that arrives for the thread not running waits for its turn, which wrk counts
# as latency (the static floor's p99 went from 1.4 ms with one thread to 3.5-4.3 ms with
# two, at no gain in throughput).
WRK_THREADS=${WRK_THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

# Targets of issue #2 (ratio to /healthz, p99, RSS) and #15 (ratio to the bare route,
# the cost of metrics).
MIN_RATIO=0.5
MIN_BARE_RATIO=0.7
MAX_P99_MS=3
MAX_RSS_MB=100
MAX_METRICS_COST=0.05

log() { printf '== %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
  log "installing wrk"
  apt-get update >/dev/null && apt-get install -y wrk >/dev/null
fi
for tool in taskset python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

bin=${ZONECERT_BIN:-$root/target/release/zonecert}
floor_bin=${FLOOR_BIN:-$root/target/release/zonecert-bare-floor}
if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "building (release)"
  (cd "$root" && cargo build --release -p zonecert -p zonecert-bench --bin zonecert --bin zonecert-bare-floor >&2)
fi
[[ -x "$bin" ]] || { echo "no $bin; build it first" >&2; exit 1; }
[[ -x "$floor_bin" ]] || { echo "no $floor_bin; build it first" >&2; exit 1; }

work=$(mktemp -d)
data=${DATA_DIR:-$work/data}
mkdir -p "$data"
ids_file="$data/bench-zone-ids.txt"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ -s "$work/server.err" ]] && grep -qiE "panic|error" "$work/server.err"; then echo "server log:" >&2; tail -n 20 "$work/server.err" >&2; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the server (optionally under a CPU pin) and sets server_pid and base; the
# server's own flags in the array server_flags.
server_flags=()
start_server() {
  local pin=("$@")
  : >"$work/server.out"
  # Lifecycle workers off (servers that have them read ZONECERT_LIFECYCLE; older ones
  # ignore it): the 20,000 ordered packs would otherwise send DCV queries to the
  # system's resolvers, off this machine, and background work would blur the figures.
  ZONECERT_LIFECYCLE=false "${pin[@]}" "$bin" serve --listen 127.0.0.1:0 --data-dir "$data" --rate-limit off ${server_flags[@]+"${server_flags[@]}"} \
    >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$work/server.out"; then
      base=$(sed -n 's/^listening on //p' "$work/server.out" | head -n1)
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "the server did not start:" >&2
  cat "$work/server.err" >&2
  exit 1
}

stop_server() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

token() { # name, permissions...
  local name=$1; shift
  local args=()
  for p in "$@"; do args+=(--permission "$p"); done
  "$bin" token create --name "$name" "${args[@]}" --data-dir "$data" --output json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])'
}

peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# ---- load phase (unpinned: only the measurement phase is pinned) ----
if [[ -s "$ids_file" ]] && [[ $(wc -l <"$ids_file") -eq $ZONES ]]; then
  log "reusing $ZONES zones loaded in $data"
else
  rm -f "$data"/zonecert.db* "$ids_file"
  "$bin" init --data-dir "$data" >/dev/null
  writer=$(token bench-loader "Zone Write" "SSL and Certificates Write")
  start_server
  log "loading $ZONES zones x 2 packs x 2 hosts through $base/client/v4"
  python3 "$here/load_zones.py" "$base/client/v4" "$writer" "$ZONES" "$ids_file" >&2
  log "load-phase server peak RSS: $(( $(peak_rss_kb "$server_pid") / 1024 )) MB"
  stop_server
fi
reader=$(token bench-reader "SSL and Certificates Read")

# ---- measurement phase: a fresh server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU ----
start_server taskset -c "$SERVER_CPU"
log "server pid $server_pid on CPU $SERVER_CPU at $base"

# Sanity: one zone's view holds its 2 packs x 2 hosts.
first=$(head -n1 "$ids_file")
curl -fsS -H "Authorization: Bearer $reader" "$base/client/v4/zones/$first/ssl/verification" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["success"], d; print("sanity:", len(d["result"]), "verification entries for one zone", file=sys.stderr)'

# wrk run: label, then wrk's trailing arguments. Prints "label req/s p50_us p99_us errors".
run_wrk() {
  local label=$1 secs=$2; shift 2
  local out
  out=$(taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" \
    -H "Authorization: Bearer $reader" -s "$here/wrk_report.lua" "$@")
  echo "$out" | grep '^RESULT' | sed "s/^RESULT/$label/"
}

# The server's CPU time so far (user + system) in clock ticks: req/s depends on how much
# of its core the server got on a shared machine; CPU time per request does not.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_hz=$(getconf CLK_TCK)

measure() { # label, url, lua args... Prints wrk's fields plus cpu_us (server CPU per request).
  local label=$1 url=$2; shift 2
  log "$label: warm-up ${WARMUP}s, then ${DURATION}s"
  run_wrk warmup "$WARMUP" "$url" -- "$@" >/dev/null
  local before after line requests
  before=$(cpu_ticks "$server_pid")
  line=$(run_wrk "$label" "$DURATION" "$url" -- "$@")
  if ! kill -0 "$server_pid" 2>/dev/null; then
    local status=0
    wait "$server_pid" || status=$?
    echo "the server exited during the $label run (status $status); its log:" >&2
    tail -n 20 "$work/server.err" >&2
    server_pid=""
    exit 1
  fi
  after=$(cpu_ticks "$server_pid")
  requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
  echo "$line cpu_us=$(( (after - before) * 1000000 / tick_hz / (requests > 0 ? requests : 1) ))"
}

floor=$(measure floor "$base/healthz" static)
verif=$(measure verification "$base/" verification "$ids_file")
rss_kb=$(peak_rss_kb "$server_pid")
# The measured answer's bytes, for the bare floor (every zone's answer has the same size
# to within a few bytes: the same packs and hosts, other ids).
curl -fsS -H "Authorization: Bearer $reader" "$base/client/v4/zones/$first/ssl/verification" >"$work/answer.json"
stop_server

log "the same without metrics (--metrics false)"
server_flags=(--metrics false)
start_server taskset -c "$SERVER_CPU"
verif_off=$(measure verification_metrics_off "$base/" verification "$ids_file")
stop_server
server_flags=()

log "bare axum floor serving $(wc -c <"$work/answer.json") bytes"
taskset -c "$SERVER_CPU" "$floor_bin" --body "$work/answer.json" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
base=""
for _ in $(seq 1 200); do
  if grep -q '^listening on ' "$work/server.out"; then
    base=$(sed -n 's/^listening on //p' "$work/server.out" | head -n1)
    break
  fi
  sleep 0.05
done
[[ -n "$base" ]] || { echo "the bare floor did not start" >&2; cat "$work/server.err" >&2; exit 1; }
bare=$(measure bare_floor "$base/" verification "$ids_file")
stop_server

python3 - "$floor" "$verif" "$rss_kb" "$MIN_RATIO" "$MAX_P99_MS" "$MAX_RSS_MB" \
  "$verif_off" "$bare" "$MIN_BARE_RATIO" "$MAX_METRICS_COST" <<'PY'
import sys

def parse(line):
    label, *pairs = line.split()
    f = {k: int(v) for k, v in (p.split("=") for p in pairs)}
    f["label"] = label
    f["rps"] = f["requests"] / (f["duration_us"] / 1e6)
    return f

floor, verif = parse(sys.argv[1]), parse(sys.argv[2])
rss_mb = int(sys.argv[3]) / 1024
min_ratio, max_p99, max_rss = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
verif_off, bare = parse(sys.argv[7]), parse(sys.argv[8])
min_bare_ratio, max_metrics_cost = float(sys.argv[9]), float(sys.argv[10])
routes = [("GET /healthz (floor)", floor), ("bare axum, same bytes (floor 2)", bare),
          ("GET .../ssl/verification", verif), ("  the same, --metrics false", verif_off)]
print()
print(f"{'route':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9} {'vs bare':>8} "
      f"{'CPU us/req':>11} {'errors':>7}")
for name, f in routes:
    errors = f["status_errors"] + f["socket_errors"]
    print(f"{name:<40} {f['rps']:>9.0f} {f['p50_us']/1000:>8.2f} {f['p99_us']/1000:>8.2f} "
          f"{f['rps']/floor['rps']:>9.2f} {f['rps']/bare['rps']:>8.2f} {f['cpu_us']:>11} {errors:>7}")
metrics_cost = 1 - verif["rps"] / verif_off["rps"]
cpu_cost = verif["cpu_us"] / max(verif_off["cpu_us"], 1) - 1
print(f"metrics cost: {metrics_cost * 100:.1f} % of req/s, {cpu_cost * 100:.1f} % of server CPU per request "
      "(metrics on vs --metrics false)")
print(f"server CPU per request, verification / floor: {verif['cpu_us'] / max(floor['cpu_us'], 1):.2f} "
      "(ratio of CPU costs; steadier than req/s when the machine is shared)")
print(f"server peak RSS (VmHWM, both runs): {rss_mb:.1f} MB")
print()
ratio = verif["rps"] / floor["rps"]
bare_ratio = verif["rps"] / bare["rps"]
checks = [
    (f"throughput >= {min_ratio} x /healthz", ratio >= min_ratio, f"{ratio:.2f}"),
    (f"throughput >= {min_bare_ratio} x the bare route", bare_ratio >= min_bare_ratio, f"{bare_ratio:.2f}"),
    (f"metrics cost <= {max_metrics_cost * 100:g} %", metrics_cost <= max_metrics_cost,
     f"{metrics_cost * 100:.1f} %"),
    (f"p99 <= {max_p99:g} ms", verif["p99_us"] / 1000 <= max_p99, f"{verif['p99_us']/1000:.2f} ms"),
    (f"peak RSS <= {max_rss:g} MB", rss_mb <= max_rss, f"{rss_mb:.1f} MB"),
    ("no errors", verif["status_errors"] + verif["socket_errors"] == 0,
     str(verif["status_errors"] + verif["socket_errors"])),
]
for name, ok, seen in checks:
    print(f"{'PASS' if ok else 'FAIL'}  {name} (measured {seen})")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY

#!/usr/bin/env bash
# Benchmark of issues #2 and #15: GET /client/v4/zones/{random zone}/ssl/verification
# with a token against a server holding ZONES zones of 2 packs x 2 hosts, next to two
# floors: the static GET /healthz of the same binary, and a bare axum route
# (bench/lifecycle/src/bare.rs, zonecert-bare-floor) serving the bytes of one of
# zonecert's verification answers for every zone, asked the same random URLs. The
# verification route is measured with metrics on (the default) and `--metrics false`,
# for the cost of measuring. The four are measured in alternation, ROUNDS times; prints
# each round's req/s, p50, p99 and ratios, their medians, the server's peak RSS, and
# PASS/FAIL per target on the medians.
#
# Usage: bench/verification.sh          (from the repository root or anywhere)
# Knobs (environment): ZONES=10000 DURATION=10 WARMUP=3 ROUNDS=5 CONNECTIONS=64 WRK_THREADS=1
#   SERVER_CPU=0 LOAD_CPU=1 DATA_DIR=<dir to keep/reuse the loaded data> SKIP_BUILD=1
#   ZONECERT_BIN=<binary to measure instead of target/release/zonecert>
#   FLOOR_BIN=<bare floor binary instead of target/release/zonecert-bare-floor>
# Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
ZONES=${ZONES:-10000}
DURATION=${DURATION:-10}
# Five rounds: the metrics' cost is a few per cent, and between two rounds of the same
# pair of servers it moved from 0.3 to 7 % (three rounds' median: 3.1 % in one run, 5.7 %
# in the next; session 16's A/B of the same two binaries, six rounds: 0.3-5.8 %, median
# about 3 %).
ROUNDS=${ROUNDS:-5}
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
# The servers, by name: their pids and base URLs.
declare -A pid_of=() base_of=()
cleanup() {
  for pid in "${pid_of[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  for err in "$work"/*.err; do
    if [[ -s "$err" ]] && grep -qiE "panic|error" "$err"; then echo "$(basename "$err" .err) log:" >&2; tail -n 20 "$err" >&2; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server (the command after its name) in the background, waits for its
# "listening on" line, and records its pid and base URL under the name.
start() {
  local name=$1; shift
  : >"$work/$name.out"
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pid_of[$name]=$!
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$work/$name.out"; then
      base_of[$name]=$(sed -n 's/^listening on //p' "$work/$name.out" | head -n1)
      return 0
    fi
    kill -0 "${pid_of[$name]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2
  cat "$work/$name.err" >&2
  exit 1
}

stop() {
  kill "${pid_of[$1]}" 2>/dev/null || true
  wait "${pid_of[$1]}" 2>/dev/null || true
  unset "pid_of[$1]"
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
  # Lifecycle workers off (servers that have them read ZONECERT_LIFECYCLE; older ones
  # ignore it), here and below: the 20,000 ordered packs would otherwise send DCV
  # queries to the system's resolvers, off this machine, and background work would blur
  # the figures.
  start loader env ZONECERT_LIFECYCLE=false "$bin" serve --listen 127.0.0.1:0 \
    --data-dir "$data" --rate-limit off
  log "loading $ZONES zones x 2 packs x 2 hosts through ${base_of[loader]}/client/v4"
  python3 "$here/load_zones.py" "${base_of[loader]}/client/v4" "$writer" "$ZONES" "$ids_file" >&2
  log "load-phase server peak RSS: $(( $(peak_rss_kb "${pid_of[loader]}") / 1024 )) MB"
  stop loader
fi
reader=$(token bench-reader "SSL and Certificates Read")

# ---- measurement phase: three servers on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU ----
# zonecert with metrics on (the default), zonecert with --metrics false (on a copy of the
# data, so the two never share a database) and the bare floor run side by side, idle but
# for the one being measured. Each round measures the four routes once, in an order
# rotated from round to round, and the figures are the rounds' medians: a virtual
# machine's speed drifts over minutes, so a ratio of two runs made a minute apart moved
# by +-15 % between runs of the same binaries; measured in alternation, both sides of a
# ratio see the same drift.
# The /healthz floor has a zonecert of its own: served by the metrics-on server, it left
# that server's GET verification 0.3-0.8 us of CPU per request slower than the metrics-off
# server's in every round (5.6-5.9 % "cost of metrics"), where two servers that served
# only GET verification differed by about 1 % (session 16).
cp -a "$data" "$work/data-metrics-off"
cp -a "$data" "$work/data-floor"
start zonecert taskset -c "$SERVER_CPU" env ZONECERT_LIFECYCLE=false "$bin" serve --listen 127.0.0.1:0 \
  --data-dir "$data" --rate-limit off
start zonecert_off taskset -c "$SERVER_CPU" env ZONECERT_LIFECYCLE=false "$bin" serve --listen 127.0.0.1:0 \
  --data-dir "$work/data-metrics-off" --rate-limit off --metrics false
start zonecert_floor taskset -c "$SERVER_CPU" env ZONECERT_LIFECYCLE=false "$bin" serve --listen 127.0.0.1:0 \
  --data-dir "$work/data-floor" --rate-limit off
log "zonecert pid ${pid_of[zonecert]} (metrics on), ${pid_of[zonecert_off]} (--metrics false), ${pid_of[zonecert_floor]} (/healthz), on CPU $SERVER_CPU"

# Sanity: one zone's view holds its 2 packs x 2 hosts; its bytes are the bare floor's
# answer (every zone's answer has the same size to within a few bytes: the same packs
# and hosts, other ids).
first=$(head -n1 "$ids_file")
curl -fsS -H "Authorization: Bearer $reader" "${base_of[zonecert]}/client/v4/zones/$first/ssl/verification" >"$work/answer.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["success"], d; print("sanity:", len(d["result"]), "verification entries for one zone", file=sys.stderr)' "$work/answer.json"
start bare taskset -c "$SERVER_CPU" "$floor_bin" --body "$work/answer.json"
log "bare axum floor pid ${pid_of[bare]} serving $(wc -c <"$work/answer.json") bytes"

# wrk run: label, then wrk's trailing arguments. Prints "label req/s p50_us p99_us errors".
run_wrk() {
  local label=$1 secs=$2; shift 2
  local out
  out=$(taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" \
    -H "Authorization: Bearer $reader" -s "$here/wrk_report.lua" "$@")
  echo "$out" | grep '^RESULT' | sed "s/^RESULT/$label/"
}

# A server's CPU time so far (user + system) in clock ticks: req/s depends on how much
# of its core the server got on a shared machine; CPU time per request does not.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_hz=$(getconf CLK_TCK)

measure() { # label, server name, url path, lua args... Prints wrk's fields plus cpu_us.
  local label=$1 name=$2 path=$3; shift 3
  local pid=${pid_of[$name]}
  log "$label: warm-up ${WARMUP}s, then ${DURATION}s"
  run_wrk warmup "$WARMUP" "${base_of[$name]}$path" -- "$@" >/dev/null
  local before after line requests
  before=$(cpu_ticks "$pid")
  line=$(run_wrk "$label" "$DURATION" "${base_of[$name]}$path" -- "$@")
  if ! kill -0 "$pid" 2>/dev/null; then
    local status=0
    wait "$pid" || status=$?
    echo "$name exited during the $label run (status $status); its log:" >&2
    tail -n 20 "$work/$name.err" >&2
    exit 1
  fi
  after=$(cpu_ticks "$pid")
  requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
  # In nanoseconds: whole microseconds (8 or 9) hid a cost of a few per cent.
  echo "$line cpu_ns=$(( (after - before) * 1000000000 / tick_hz / (requests > 0 ? requests : 1) ))"
}

routes=(floor verification verification_metrics_off bare_floor)
results=()
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!routes[@]}"; do
    route=${routes[$(( (i + round - 1) % ${#routes[@]} ))]}
    case $route in
      floor) line=$(measure floor zonecert_floor /healthz static) ;;
      verification) line=$(measure verification zonecert / verification "$ids_file") ;;
      verification_metrics_off) line=$(measure verification_metrics_off zonecert_off / verification "$ids_file") ;;
      bare_floor) line=$(measure bare_floor bare / verification "$ids_file") ;;
    esac
    results+=("$round $line")
  done
done
rss_kb=$(peak_rss_kb "${pid_of[zonecert]}")
for name in zonecert zonecert_off zonecert_floor bare; do stop "$name"; done

printf '%s\n' "${results[@]}" >"$work/results.txt"
python3 - "$work/results.txt" "$rss_kb" "$MIN_RATIO" "$MAX_P99_MS" "$MAX_RSS_MB" \
  "$MIN_BARE_RATIO" "$MAX_METRICS_COST" <<'PY'
import statistics
import sys

def parse(line):
    round_, label, *pairs = line.split()
    f = {k: int(v) for k, v in (p.split("=") for p in pairs)}
    f["label"], f["round"] = label, int(round_)
    f["rps"] = f["requests"] / (f["duration_us"] / 1e6)
    return f

runs = [parse(line) for line in open(sys.argv[1]) if line.strip()]
rounds = sorted({r["round"] for r in runs})
by = {(r["round"], r["label"]): r for r in runs}
rss_mb = int(sys.argv[2]) / 1024
min_ratio, max_p99, max_rss = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
min_bare_ratio, max_metrics_cost = float(sys.argv[6]), float(sys.argv[7])
routes = [("GET /healthz (floor)", "floor"), ("bare axum, same bytes (floor 2)", "bare_floor"),
          ("GET .../ssl/verification", "verification"),
          ("  the same, --metrics false", "verification_metrics_off")]

def median(label, key):
    return statistics.median(by[(n, label)][key] for n in rounds)

print()
print(f"each round ({len(rounds)}, routes in rotated order):")
print(f"{'round':>5} {'route':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9} {'vs bare':>8} "
      f"{'CPU us/req':>11} {'errors':>7}")
for n in rounds:
    floor, bare = by[(n, "floor")], by[(n, "bare_floor")]
    for name, label in routes:
        f = by[(n, label)]
        errors = f["status_errors"] + f["socket_errors"]
        print(f"{n:>5} {name:<40} {f['rps']:>9.0f} {f['p50_us']/1000:>8.2f} {f['p99_us']/1000:>8.2f} "
              f"{f['rps']/floor['rps']:>9.2f} {f['rps']/bare['rps']:>8.2f} {f['cpu_ns']/1000:>11.2f} {errors:>7}")
def per_round(fn):
    return statistics.median(fn(n) for n in rounds)
ratio = per_round(lambda n: by[(n, "verification")]["rps"] / by[(n, "floor")]["rps"])
bare_ratio = per_round(lambda n: by[(n, "verification")]["rps"] / by[(n, "bare_floor")]["rps"])
metrics_cost = per_round(lambda n: 1 - by[(n, "verification")]["rps"] / by[(n, "verification_metrics_off")]["rps"])
cpu_cost = per_round(lambda n: by[(n, "verification")]["cpu_ns"] / max(by[(n, "verification_metrics_off")]["cpu_ns"], 1) - 1)
p99_ms = median("verification", "p99_us") / 1000
errors = sum(by[(n, "verification")]["status_errors"] + by[(n, "verification")]["socket_errors"] for n in rounds)
print()
print("medians of the rounds:")
print(f"{'route':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}")
for name, label in routes:
    print(f"{name:<40} {median(label, 'rps'):>9.0f} {median(label, 'p50_us')/1000:>8.2f} "
          f"{median(label, 'p99_us')/1000:>8.2f} {median(label, 'cpu_ns')/1000:>11.2f}")
print(f"ratios (median of the rounds' own ratios): verification / healthz {ratio:.2f}, "
      f"verification / bare route {bare_ratio:.2f}")
print(f"metrics cost: {metrics_cost * 100:.1f} % of req/s, {cpu_cost * 100:.1f} % of server CPU per request "
      "(metrics on vs --metrics false, median of the rounds)")
print(f"server CPU per request, verification / floor: "
      f"{median('verification', 'cpu_ns') / max(median('floor', 'cpu_ns'), 1):.2f} "
      "(ratio of CPU costs; steadier than req/s when the machine is shared)")
print(f"server peak RSS (VmHWM, metrics on, every round): {rss_mb:.1f} MB")
print()
checks = [
    (f"throughput >= {min_ratio} x /healthz", ratio >= min_ratio, f"{ratio:.2f}"),
    (f"throughput >= {min_bare_ratio} x the bare route", bare_ratio >= min_bare_ratio, f"{bare_ratio:.2f}"),
    (f"metrics cost <= {max_metrics_cost * 100:g} %", metrics_cost <= max_metrics_cost,
     f"{metrics_cost * 100:.1f} %"),
    (f"p99 <= {max_p99:g} ms", p99_ms <= max_p99, f"{p99_ms:.2f} ms"),
    (f"peak RSS <= {max_rss:g} MB", rss_mb <= max_rss, f"{rss_mb:.1f} MB"),
    ("no errors", errors == 0, str(errors)),
]
for name, ok, seen in checks:
    print(f"{'PASS' if ok else 'FAIL'}  {name} (measured {seen})")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY

#!/usr/bin/env bash
# The compatibility suite: drives a real zonecert server with Cloudflare's official SDKs.
#   1. builds the `zonecert` binary (or takes ZONECERT_BIN); its `dev dns` is the loopback DNS
#      server (and HTTP origin) the lifecycle tests validate against,
#   2. installs the pinned SDKs into .sdk/ (scripts/install-sdks.sh),
#   3. runs the TypeScript tests (node --test) and the Python tests (pytest, strict response
#      validation); each test file / session starts its own fresh server on 127.0.0.1:0,
#   4. runs the seed page's example verbatim against a fresh dev server.
# Exits non-zero when anything fails, after printing every runner's summary.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${ZONECERT_BIN:-}" ]]; then
    echo "compat: cargo build -p zonecert"
    cargo build -p zonecert || exit 1
    ZONECERT_BIN="$root/target/debug/zonecert"
fi
export ZONECERT_BIN
[[ -x "$ZONECERT_BIN" ]] || { echo "compat: no executable zonecert at $ZONECERT_BIN" >&2; exit 1; }

scripts/install-sdks.sh || exit 1

logs="$(mktemp -d "${TMPDIR:-/tmp}/zonecert-compat.XXXXXX")"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    rm -rf "$logs"
}
trap cleanup EXIT

# A stray credential in the caller's environment would change what the SDKs send.
clean_env=(env -u CLOUDFLARE_API_TOKEN -u CLOUDFLARE_API_KEY -u CLOUDFLARE_EMAIL -u CLOUDFLARE_BASE_URL
    -u CLOUDFLARE_API_USER_SERVICE_KEY -u CLOUDFLARE_CUSTOM_HEADERS)

status=0

echo "compat: TypeScript SDK tests (npm cloudflare $(node -p "require('./.sdk/node/node_modules/cloudflare/package.json').version"))"
(cd tests/compat/ts && "${clean_env[@]}" node --test --test-reporter=spec ./*.test.mjs) 2>&1 | tee "$logs/ts.log"
ts_status=${PIPESTATUS[0]}
[[ $ts_status -eq 0 ]] || status=1

echo "compat: Python SDK tests ($(grep '^cloudflare==' tests/compat/py/requirements.txt))"
"${clean_env[@]}" .sdk/py/bin/python -m pytest tests/compat/py -q -p no:cacheprovider 2>&1 | tee "$logs/py.log"
py_status=${PIPESTATUS[0]}
[[ $py_status -eq 0 ]] || status=1

# The seed page's example, unchanged: only the environment points it at a local dev server.
echo "compat: seed example (tests/compat/ts/seed-example.mjs)"
seed_status=1
mkdir -p "$logs/seed-data"
"$ZONECERT_BIN" serve --dev --listen 127.0.0.1:0 --data-dir "$logs/seed-data" >"$logs/seed-server.out" 2>&1 &
server_pid=$!
base_url="" token=""
for _ in $(seq 1 600); do
    base_url="$(grep -o 'CLOUDFLARE_BASE_URL=[^ ]*' "$logs/seed-server.out" | head -n1 | cut -d= -f2- | tr -d "\"'")"
    token="$(grep -o 'CLOUDFLARE_API_TOKEN=[^ ]*' "$logs/seed-server.out" | head -n1 | cut -d= -f2- | tr -d "\"'")"
    [[ -n "$base_url" && -n "$token" ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -n "$base_url" && -n "$token" ]]; then
    (cd tests/compat/ts && "${clean_env[@]}" CLOUDFLARE_BASE_URL="$base_url" CLOUDFLARE_API_TOKEN="$token" \
        node seed-example.mjs) >"$logs/seed.log" 2>&1
    seed_run=$?
    cat "$logs/seed.log"
    if [[ $seed_run -eq 0 ]] && grep -q "a77f8bd7-3b47-46b4-a6f1-75cf98109948" "$logs/seed.log"; then
        seed_status=0
    fi
else
    echo "compat: the dev server printed no address and token:" >&2
    cat "$logs/seed-server.out" >&2
fi
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=""
[[ $seed_status -eq 0 ]] || status=1

echo
echo "compat: summary"
echo "  typescript (exit $ts_status): $(grep -E '^ℹ (tests|pass|fail|skipped|todo|cancelled) ' "$logs/ts.log" | sed 's/^ℹ //' | tr '\n' ' ')"
echo "  python     (exit $py_status): $(grep -E '(passed|failed|error)' "$logs/py.log" | tail -n1)"
if [[ $seed_status -eq 0 ]]; then
    echo "  seed example: ok (printed the dev pack a77f8bd7-3b47-46b4-a6f1-75cf98109948)"
else
    echo "  seed example: FAILED"
fi
exit $status

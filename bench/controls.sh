#!/usr/bin/env bash
# Test controls benchmark (issue 16): a `zonecert serve --dev --dcv-auto-validate` server on
# 127.0.0.1:0 whose CAA lookups go to a `zonecert dev dns` on loopback; prints
#   - `POST /_zonecert/v1/reset` (what `zonecert dev reset` sends): the server's own time for
#     it (`took_ms`) and the round trip, median and max over RESETS runs;
#   - order -> `GET ?retry=true` answering `active` with auto-validation: median and max
#     over ORDERS orders (a reset every 40 orders keeps the zone under its quota), and how
#     many answers were not `active`.
# Targets: reset under 200 ms, order -> active median under 10 ms.
#
# Usage: bench/controls.sh   (run under `flock /work/wt/bench.lock` on shared machines)
# Knobs (environment): ZONECERT_BIN (default: builds and takes target/release/zonecert),
# RESETS=50 ORDERS=200. Everything runs on 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
if [[ -z "${ZONECERT_BIN:-}" ]]; then
  (cd "$root" && cargo build --release -p zonecert >&2)
  ZONECERT_BIN=${CARGO_TARGET_DIR:-$root/target}/release/zonecert
fi
export ZONECERT_BIN RESETS=${RESETS:-50} ORDERS=${ORDERS:-200}

exec python3 - <<'PY'
import http.client, json, os, re, shutil, statistics, subprocess, tempfile, time

binary = os.environ["ZONECERT_BIN"]
tmp = tempfile.mkdtemp(prefix="zonecert-bench-controls-")
dns = subprocess.Popen([binary, "dev", "dns"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
dns_addr = re.fullmatch(r"dns listening on (\S+)\n", dns.stdout.readline()).group(1)
dns.stdout.readline()
out = open(os.path.join(tmp, "server.out"), "w+")
server = subprocess.Popen(
    [binary, "serve", "--dev", "--dcv-auto-validate", "--rate-limit", "off", "--listen", "127.0.0.1:0",
     "--data-dir", os.path.join(tmp, "data"), "--dcv-resolvers", dns_addr],
    stdout=out, stderr=open(os.path.join(tmp, "server.err"), "w"))
try:
    base = token = None
    for _ in range(1200):
        text = open(out.name).read()
        m = re.search(r"CLOUDFLARE_BASE_URL=(\S+) CLOUDFLARE_API_TOKEN=(\S+)", text)
        if m:
            base, token = m.group(1), m.group(2)
            break
        time.sleep(0.05)
    assert base, open(out.name).read()
    root = base.replace("/client/v4", "")
    zone = "023e105f4ecef8ad9ca31a8372d0c353"

    # One kept-alive connection, as the official SDKs keep theirs (httpx, undici, Go's
    # net/http): the figures are the server's, not a TCP handshake per call.
    host, port = re.fullmatch(r"http://([^:/]+):(\d+)/.*", base).groups()
    conn = http.client.HTTPConnection(host, int(port))

    def call(method, url, body=None):
        path = url[url.index("/", len("http://")):]
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = json.load(resp)
        if resp.status != 200:
            log = open(os.path.join(tmp, "server.err")).read().splitlines()
            raise SystemExit(f"{method} {path}: {resp.status} {payload}\nserver log:\n" + "\n".join(log[-15:]))
        return payload["result"]

    resets, trips = [], []
    for _ in range(int(os.environ["RESETS"])):
        started = time.perf_counter()
        done = call("POST", f"{root}/_zonecert/v1/reset")
        trips.append((time.perf_counter() - started) * 1000)
        resets.append(done["took_ms"])
    order_ms, ordered_ms, not_active = [], [], 0
    for i in range(int(os.environ["ORDERS"])):
        if i % 40 == 0:
            call("POST", f"{root}/_zonecert/v1/reset")
        started = time.perf_counter()
        pack = call("POST", f"{base}/zones/{zone}/ssl/certificate_packs/order",
                    {"type": "advanced", "hosts": ["example.com", f"h{i}.example.com"], "validation_method": "txt",
                     "validity_days": 90, "certificate_authority": "lets_encrypt"})
        ordered_ms.append((time.perf_counter() - started) * 1000)
        items = call("GET", f"{base}/zones/{zone}/ssl/verification?retry=true")
        order_ms.append((time.perf_counter() - started) * 1000)
        mine = [v for v in items if v["cert_pack_uuid"] == pack["id"]]
        if not mine or any(v["certificate_status"] != "active" for v in mine):
            not_active += 1
    print(f"dev reset (server's took_ms): median {statistics.median(resets):.1f} ms, max {max(resets):.1f} ms "
          f"over {len(resets)} (round trip: median {statistics.median(trips):.1f} ms, max {max(trips):.1f} ms)")
    print(f"order -> active (auto-validation, one retry=true): median {statistics.median(order_ms):.1f} ms, "
          f"max {max(order_ms):.1f} ms over {len(order_ms)} (the order alone: median {statistics.median(ordered_ms):.1f} ms); "
          f"answers not active: {not_active}")
finally:
    server.terminate(); server.wait()
    dns.stdin.close(); dns.wait()
    shutil.rmtree(tmp, ignore_errors=True)
PY

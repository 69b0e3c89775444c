#!/usr/bin/env python3
"""The storm of the retry-storm benchmark: CLIENTS threads, each with its own keep-alive
connection, send `GET /zones/ZONE/ssl/verification?retry=true` at RATE requests per
second in all (paced, as an abusive script or a tight CI loop would send them) for
SECONDS, then print one line:
  STORM requests=N ok=N limited=N other=N max_ms=N

Usage: retry_storm.py BASE_URL TOKEN ZONE_ID CLIENTS RATE SECONDS [QUERY]
(QUERY: `retry=true` by default; empty for plain GETs, the storm's reference)
Only talks to the server given (a loopback address in the benchmark)."""

import http.client
import sys
import threading
import time
import urllib.parse


def main() -> int:
    base, token, zone = sys.argv[1], sys.argv[2], sys.argv[3]
    clients, rate, seconds = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    url = urllib.parse.urlsplit(base)
    query = sys.argv[7] if len(sys.argv) > 7 else "retry=true"
    path = f"{url.path.rstrip('/')}/zones/{zone}/ssl/verification" + (f"?{query}" if query else "")
    headers = {"Authorization": f"Bearer {token}"}
    lock = threading.Lock()
    counts = {"requests": 0, "ok": 0, "limited": 0, "other": 0}
    slowest = [0.0]
    start = time.monotonic()
    deadline = start + seconds
    interval = clients / rate  # each client's share of the rate

    def client(n: int) -> None:
        conn = None
        next_at = start + n * interval / clients
        while True:
            now = time.monotonic()
            if next_at >= deadline:
                return
            if next_at > now:
                time.sleep(next_at - now)
            next_at += interval
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            t0 = time.monotonic()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = None
                status = 0
            took = time.monotonic() - t0
            with lock:
                counts["requests"] += 1
                kind = "ok" if status == 200 else "limited" if status == 429 else "other"
                counts[kind] += 1
                slowest[0] = max(slowest[0], took)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(
        f"STORM requests={counts['requests']} ok={counts['ok']} limited={counts['limited']} "
        f"other={counts['other']} max_ms={int(slowest[0] * 1000)}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

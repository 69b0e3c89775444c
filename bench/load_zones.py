#!/usr/bin/env python3
"""Loads the benchmark's data set through the HTTP API: N zones, each with two
advanced certificate packs of two hosts, then writes the zone ids (one a line).

Usage: load_zones.py BASE_URL TOKEN ZONES OUT_FILE [THREADS]
Only talks to the server given (a loopback address in the benchmark)."""

import http.client
import json
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    base, token, zones, out_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    url = urllib.parse.urlsplit(base)
    prefix = url.path.rstrip("/")
    local = threading.local()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict) -> dict:
        # One keep-alive connection per thread; reopened if the server closed it.
        for attempt in range(3):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            try:
                conn.request(method, prefix + path, json.dumps(body), headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
                continue
            doc = json.loads(data)
            if resp.status != 200 or not doc.get("success"):
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:300]!r}")
            return doc["result"]
        raise RuntimeError("unreachable")

    def load_one(n: int) -> str:
        apex = f"z{n}.example"
        zone = call("POST", "/zones", {"name": apex})
        for extra in ("www", "api"):
            call(
                "POST",
                f"/zones/{zone['id']}/ssl/certificate_packs/order",
                {
                    "type": "advanced",
                    "hosts": [apex, f"{extra}.{apex}"],
                    "validation_method": "txt",
                    "validity_days": 90,
                    "certificate_authority": "google",
                },
            )
        return zone["id"]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ids = list(pool.map(load_one, range(zones), chunksize=64))
    elapsed = time.monotonic() - started
    with open(out_file, "w") as f:
        f.write("\n".join(ids) + "\n")
    print(
        f"loaded {len(ids)} zones and {2 * len(ids)} packs in {elapsed:.1f} s "
        f"({3 * len(ids) / elapsed:.0f} writes/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Sends exactly N GET verification requests (random zones, fixed seeds: the same
requests every run) over C keep-alive connections; for bench/verification_instructions.sh.

Usage: verification_instructions.py BASE_URL TOKEN ZONE_IDS_FILE N C
Only talks to the server given (a loopback address in the benchmark)."""

import http.client
import random
import sys
import threading
import urllib.parse


def main() -> int:
    base, token, ids_file = sys.argv[1], sys.argv[2], sys.argv[3]
    n, c = int(sys.argv[4]), int(sys.argv[5])
    url = urllib.parse.urlsplit(base)
    with open(ids_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    errors = []

    def worker(k: int, count: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        rnd = random.Random(k)
        for _ in range(count):
            conn.request("GET", f"/client/v4/zones/{rnd.choice(ids)}/ssl/verification",
                         headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                errors.append(resp.status)
        conn.close()

    counts = [n // c + (1 if i < n % c else 0) for i in range(c)]
    threads = [threading.Thread(target=worker, args=(i, k)) for i, k in enumerate(counts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"{len(errors)} of {n} requests failed: {sorted(set(errors))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

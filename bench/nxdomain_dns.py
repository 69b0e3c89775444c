#!/usr/bin/env python3
"""A loopback DNS server for the retry-storm benchmark: answers every query NXDOMAIN
(no validation record exists, so every DCV check fails at once and the pack stays
pending) and counts the queries, so the benchmark can tell how many lookups a phase
caused.

Usage: nxdomain_dns.py COUNT_FILE
Prints "dns listening on 127.0.0.1:PORT", then rewrites COUNT_FILE with the number of
queries answered so far every 100 ms. Listens on 127.0.0.1 only."""

import os
import socket
import sys
import threading
import time


def answer(query: bytes) -> bytes | None:
    # Header (12 bytes) then one question: copy the id and the question, set QR, keep RD,
    # set RA, RCODE 3 (NXDOMAIN), no answer/authority/additional records.
    if len(query) < 12:
        return None
    qdcount = int.from_bytes(query[4:6], "big")
    end = 12
    if qdcount >= 1:
        while end < len(query) and query[end] != 0:
            end += 1 + query[end]
        end += 5  # the root label, QTYPE, QCLASS
        if end > len(query):
            return None
    flags = 0x8000 | (int.from_bytes(query[2:4], "big") & 0x0100) | 0x0080 | 3
    header = query[0:2] + flags.to_bytes(2, "big") + (1 if qdcount else 0).to_bytes(2, "big") + bytes(6)
    return header + query[12:end]


def main() -> int:
    count_file = sys.argv[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(f"dns listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    count = 0

    def publish() -> None:
        while True:
            with open(count_file + ".tmp", "w") as f:
                f.write(f"{count}\n")
            # Renamed into place so a reader never sees a half-written number.
            os.replace(count_file + ".tmp", count_file)
            time.sleep(0.1)

    threading.Thread(target=publish, daemon=True).start()
    while True:
        data, peer = sock.recvfrom(4096)
        reply = answer(data)
        if reply is not None:
            count += 1
            sock.sendto(reply, peer)


if __name__ == "__main__":
    sys.exit(main())

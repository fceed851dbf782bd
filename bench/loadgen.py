"""A load generator, run as its own process: N threads with keep-alive connections replay
pre-built requests as fast as they are answered. Prints JSON: requests/s and latencies."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    spec = json.load(sys.stdin)
    url = urlsplit(spec["base_url"])
    requests_ = spec["requests"]  # [{"method", "path", "body", "headers"}], used once each
    threads = int(spec.get("threads", 8))
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(requests_):
                break
            r = requests_[i]
            t0 = time.perf_counter()
            try:
                conn.request(r["method"], r["path"], body=r.get("body"), headers=r["headers"])
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                status = -1
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    print(json.dumps({"requests": len(latencies), "seconds": wall,
                      "rps": len(latencies) / wall if wall else 0.0,
                      "p50_ms": latencies[len(latencies) // 2] * 1000,
                      "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                      "statuses": statuses}))


if __name__ == "__main__":
    main()

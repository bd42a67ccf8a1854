"""A small HTTP load generator, run as a separate process so it does not share the GIL.

    python loadgen.py URL TOKEN CLIENTS REQUESTS THINK PATH...

Each of CLIENTS threads keeps one connection and sends REQUESTS GETs (cycling through the
PATHs), pausing about THINK seconds between them (clients start and pause at random
offsets, as independent users do); prints the latencies (ms) as a JSON list. A first,
unmeasured request per client warms connections, caches and threads up.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlsplit


def _client(
    netloc: str, token: str, paths: list[str], requests: int, think: float, out: list[float]
) -> None:
    host, _, port = netloc.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    time.sleep(random.uniform(0, think))
    for n in range(-1, requests):
        path = paths[n % len(paths)]
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if n >= 0:
            out.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}")
        time.sleep(random.uniform(0.5 * think, 1.5 * think))
    conn.close()


def main(argv: list[str]) -> None:
    url, token, clients, requests, think, *paths = argv
    netloc = urlsplit(url).netloc
    latencies: list[float] = []
    threads = [
        threading.Thread(
            target=_client,
            args=(netloc, token, paths[k:] + paths[:k], int(requests), float(think), latencies),
        )
        for k in range(int(clients))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(latencies))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Slow-body flood benchmark (issue 16, point 1): N connections that announce a 100,000-byte body
and send a byte every few seconds, against one gunicorn gevent worker (gunicorn.conf.py as shipped).

While the flood holds, a signed-in client sends one request every 50 ms (``GET /api/ingest/roots``)
and reads one SSE stream's keepalives; the bench reports that client's latency (p50/p99), what
became of the flood's connections (408 at their deadline, 503 refused at once, still open), and the
worker's RSS before the flood, at its peak and 5 s after it ended. Two floods: anonymous
connections (bounded by ``INGEST_MAX_ANONYMOUS``) and connections carrying a made-up session
cookie (which pass that bound and meet the body deadline).

    .venv/bin/python bench/slow_clients_bench.py --connections 1000 --hold 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import Server, gunicorn

SEND_EVERY = 5.0  # seconds between the flood's bytes


async def slow_connection(port: int, cookie: bool, hold: float, outcome: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        outcome["refused at connect"] += 1
        return
    head = ("POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 100000\r\n" + ("Cookie: session=made-up\r\n" if cookie else "") + "\r\n")
    writer.write(head.encode())
    ended = time.monotonic() + hold
    try:
        while time.monotonic() < ended:
            try:
                answer = await asyncio.wait_for(reader.read(64), SEND_EVERY)
            except TimeoutError:
                writer.write(b"a")
                continue
            status = answer[9:12].decode(errors="replace") if answer else "closed"
            outcome[status] += 1
            return
        outcome["still open"] += 1
    except OSError:
        outcome["reset"] += 1
    finally:
        writer.close()


async def signed_in_client(port: int, token: str, until: float) -> list[float]:
    latencies: list[float] = []
    request = (f"GET /api/ingest/roots HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            await reader.readexactly(int(head.split(b"content-length:")[1].split(b"\r\n")[0]))
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    finally:
        writer.close()
    return latencies


def rss_mib(server: Server) -> float:
    worker = psutil.Process(server.process.pid).children()[0]
    return worker.memory_info().rss / 2**20


async def flood(server: Server, connections: int, hold: float, cookie: bool) -> dict[str, object]:
    from collections import Counter

    outcome: Counter[str] = Counter()
    before = rss_mib(server)
    until = time.monotonic() + hold
    client = asyncio.create_task(signed_in_client(server.port, server.token or "", until))
    flooders = [asyncio.create_task(slow_connection(server.port, cookie, hold, outcome)) for _ in range(connections)]
    peak = before
    while time.monotonic() < until:
        await asyncio.sleep(1)
        peak = max(peak, rss_mib(server))
    latencies = sorted(await client)
    await asyncio.gather(*flooders)
    await asyncio.sleep(5)
    return {
        "flood": "made-up cookie" if cookie else "anonymous",
        "connections": connections,
        "outcomes": dict(outcome),
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "rss_before_mib": round(before), "rss_peak_mib": round(peak), "rss_after_mib": round(rss_mib(server)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the flood lasts")
    parser.add_argument("--rounds", type=int, default=1, help="both floods, this many times (does memory grow?)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "media").mkdir()
        with gunicorn(base / "instance", base / "media") as server:
            asyncio.run(flood(server, 50, 2 * SEND_EVERY, True))  # warm up: the app's lazy imports, buffers
            for _ in range(args.rounds):
                for cookie in (False, True):
                    print(asyncio.run(flood(server, args.connections, args.hold, cookie)), flush=True)


if __name__ == "__main__":
    main()

"""Broker fan-out micro-benchmark: the hub time one event costs per subscribed SSE stream.

In one process, as in a gunicorn gevent worker (monkey-patched, Prometheus multiprocess mode on, the
app's modules loaded and frozen out of the collector's reach), K ``EventStream``s are subscribed to
one session through a real ``Broker``, each on one end of a Unix socket pair whose writes a
greenlet does the way gunicorn does them (``sendall`` of one HTTP/1.1 chunk per yielded body chunk).
The bench then publishes N events, ``--burst`` at a time as the job's writer greenlet does after a
commit (``ingestapp.jobs.run.Job.commit``: ``publish`` per event), and waits after each burst until
every stream has written it. It reports, per delivery (one event to one stream):

* ``publish_us``: the publisher's own time in ``deliver`` (``Broker._on_event``: the fan-out loop,
  what the writer greenlet, and so the next commit and every other greenlet, waits for);
* ``deliver_us``: the whole hub time, publisher and streams (wake-up, batching, counters, write).

Both are process CPU time (``time.process_time``), so other processes on a shared machine count
less than in wall time; the best of ``--repeat`` rounds is kept. Times on a shared machine still
vary by a third, so the guard also counts what a delivery does, which does not vary:

* ``prometheus_writes``: Prometheus value writes (a lock and an mmap write each in multiprocess
  mode) per delivery: the stream counters are mirrored once a second, so about 0 at any K;
* ``switches``: greenlet switches per delivery: a stream woken once per burst, not once per event.

With ``--check`` the exit status is 1 when a figure exceeds its budget (``BUDGETS``: the counts
tightly, the times loosely, from docs/benchmarks.md section 5 with room for a slower or busier
machine): the cheap guard against a fan-out regression, run by ``make bench-check``. No server, no
client process, no database: about 10 s on an idle machine.

    .venv/bin/python bench/fanout_bench.py --streams 1000 --events 200 --check
"""

from gevent import monkey

monkey.patch_all()  # as gunicorn's gevent worker does before it loads the app

# ruff: noqa: E402 (imports after the monkey-patching and the Prometheus directory, on purpose)
import argparse
import gc
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import greenlet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# prometheus_client picks its value class at import: multiprocess mode, as gunicorn.conf.py sets it up.
METRICS_DIR = tempfile.mkdtemp(prefix="fanout-bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR

from prometheus_client import values

import ingestapp.factory  # noqa: F401 (the worker's modules: its heap is what a collection walks)
from ingestapp.core.vocabulary import SessionStatus
from ingestapp.events.broker import Broker
from ingestapp.events.model import deliver, make_event
from ingestapp.events.sse import EventStream, StreamSettings

#: Per delivery, not to exceed (``--check``); docs/benchmarks.md section 5 has the measured figures.
BUDGETS = {"publish_us": 8.0, "deliver_us": 30.0, "prometheus_writes": 0.01, "switches": 1.1}
SESSION = "bench-session"
QUEUE_SIZE = 1000  # INGEST_SSE_QUEUE's default
SETTINGS = StreamSettings(retry_ms=2000, keepalive=15.0, max_age=300.0, send_timeout=30.0)
WAIT_TIMEOUT = 60.0  # seconds for every stream to write one burst


class Source:
    """The session source a stream reads its snapshot from (``sse.SessionSource``), without a database."""

    engine: Any = None

    def state(self, session_id: str) -> dict[str, Any]:
        return {"session_id": session_id, "status": SessionStatus.PROCESSING, "last_event_id": 0}


@dataclass
class Streams:
    """K streams and their writer greenlets; ``written`` counts the streams that wrote ``target``."""

    broker: Broker
    target: int = 0
    written: int = 0
    done: gevent.event.Event = field(default_factory=gevent.event.Event)
    greenlets: list[gevent.Greenlet] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def open(self, count: int) -> None:
        for _ in range(count):
            server_end, client_end = socket.socketpair()
            client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # never read: room for it all
            self.sockets += [server_end, client_end]
            stream = EventStream(Source(), self.broker, SETTINGS, SESSION, None, server_end)
            self.greenlets.append(gevent.spawn(self._write, stream, server_end))

    def _write(self, stream: EventStream, sock: socket.socket) -> None:
        """What gunicorn does with a streamed body: one chunk per item, written before the next."""
        for chunk in stream:
            sock.sendall(b"%X\r\n%s\r\n" % (len(chunk), chunk))
            if stream.last_sent >= self.target > 0:
                self.written += 1
                if self.written == len(self.greenlets):
                    self.done.set()

    def expect(self, seq: int) -> None:
        self.target, self.written = seq, 0
        self.done.clear()

    def close(self) -> None:
        self.broker.close_all()
        gevent.joinall(self.greenlets, timeout=WAIT_TIMEOUT)
        for sock in self.sockets:
            sock.close()


class Operations:
    """Counts Prometheus value writes and greenlet switches while installed (``with``)."""

    def __init__(self) -> None:
        self.prometheus_writes = 0
        self.switches = 0
        self._inc = values.ValueClass.inc

    def __enter__(self) -> "Operations":
        original = self._inc

        def counted_inc(value: Any, amount: float) -> None:
            self.prometheus_writes += 1
            original(value, amount)

        values.ValueClass.inc = counted_inc
        greenlet.settrace(self._trace)
        return self

    def _trace(self, event: str, args: Any) -> None:
        if event == "switch":
            self.switches += 1

    def __exit__(self, *exc: object) -> None:
        greenlet.settrace(None)
        values.ValueClass.inc = self._inc


def run_round(streams: int, events: int, burst: int, count: bool) -> dict[str, float]:
    """One round on a fresh broker, per delivery: publisher and total hub CPU time in µs, or (with
    ``count``, whose tracing would distort the times) Prometheus writes and greenlet switches."""
    broker = Broker(QUEUE_SIZE)
    group = Streams(broker)
    operations = Operations()
    try:
        group.open(streams)
        gevent.sleep(0.2)  # every stream has written its snapshot and waits for events
        if count:
            operations.__enter__()
        publishing = 0.0
        started = time.process_time()
        for first in range(1, events + 1, burst):
            seqs = range(first, min(first + burst, events + 1))
            group.expect(seqs[-1])
            before = time.process_time()
            for seq in seqs:
                event_type = "file" if seq % 2 else "progress"
                deliver(make_event(SESSION, seq, event_type, {"path": f"photos/{seq:05d}.jpg", "processed": seq}))
            publishing += time.process_time() - before
            if not group.done.wait(WAIT_TIMEOUT):
                raise TimeoutError(f"{streams - group.written} streams never wrote seq {seqs[-1]}")
        total = time.process_time() - started
    finally:
        operations.__exit__()
        group.close()
        broker.disconnect()
    deliveries = streams * events
    if count:
        return {"prometheus_writes": operations.prometheus_writes / deliveries,
                "switches": operations.switches / deliveries}
    return {"publish_us": publishing / deliveries * 1e6, "deliver_us": total / deliveries * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="subscribed streams K")
    parser.add_argument("--events", type=int, default=200, help="events published per round N")
    parser.add_argument("--burst", type=int, default=2, help="events published back to back (one commit's)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure exceeds its budget")
    args = parser.parse_args(argv)
    gc.collect()
    gc.freeze()  # as gunicorn.conf.py's post_worker_init does once the app is loaded
    try:
        rounds = [run_round(args.streams, args.events, args.burst, False) for _ in range(args.repeat)]
        counts = run_round(args.streams, args.events, args.burst, True)
    finally:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
    best = {name: round(min(r[name] for r in rounds), 3) for name in rounds[0]}
    figures = {**best, **{name: round(value, 4) for name, value in counts.items()}}
    over = {name: value for name, value in figures.items() if value > BUDGETS[name]}
    print(json.dumps({"streams": args.streams, "events": args.events, "burst": args.burst,
                      "per_delivery": figures, "budgets": BUDGETS, "rounds_us": rounds,
                      "loadavg_1min": round(os.getloadavg()[0], 2)}))
    if args.check and over:
        print(f"fan-out over budget (per delivery): {over}; see docs/benchmarks.md section 5", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

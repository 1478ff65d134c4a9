"""Prometheus metrics (prometheus_client), summed over gunicorn's workers by its multiprocess mode.

``gunicorn.conf.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before the workers
import this module, and marks a worker's files dead when it exits; without the variable (tests,
the CLI) the metrics live in this process only. ``GET /metrics`` renders them
(``web/prometheus.py``). Only prometheus_client here: every part may count.
"""

from __future__ import annotations

from collections import Counter as Counts

from prometheus_client import Counter, Gauge, Histogram

OPEN_STREAMS = Gauge("ingest_open_streams", "Open SSE streams (summed over live workers).",
                     multiprocess_mode="livesum")
EVENTS_EMITTED = Counter("ingest_events_emitted", "Events published by jobs.")
#: The broker's own counters (``Broker.counters`` keys), mirrored by ``MirroredCounts``.
STREAM_COUNTERS = {
    "events_delivered": Counter("ingest_events_delivered", "Events written to SSE streams."),
    "events_conflated": Counter("ingest_events_conflated", "Progress/stage events superseded in a slow "
                                "client's queue."),
    "events_replayed": Counter("ingest_events_replayed", "Events replayed to streams from the event log."),
    "disconnects": Counter("ingest_stream_disconnects", "Streams closed because the client went away."),
    "slow_client_drops": Counter("ingest_slow_client_drops", "Streams ended because the client did not read."),
}
#: Labelled (``bus``: local | redis) so that only processes that run a bus report it: the work
#: tier's processes import this module too, and an unlabelled gauge would show them as "down".
BUS_UP = Gauge("ingest_bus_up", "1 while this worker's event bus reader is connected to Redis, else 0.",
               ["bus"], multiprocess_mode="liveall")
BUS_RECONNECTS = Counter("ingest_bus_reconnects", "Event-bus reconnections to Redis after an outage.")
BUS_GAPS = Counter("ingest_bus_gaps", "Gaps in a session's seq seen by a bus reader (backfilled from SQL).")
FILES = Counter("ingest_files", "Files through a stage, by outcome (ok | error).", ["stage", "outcome"])
STAGE_SECONDS = Histogram(
    "ingest_stage_duration_seconds", "Wall time of one stage's run on one file, measured in the stage process "
    "(the pipe, the Redis hop and waiting for a process not included).",
    ["stage"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class MirroredCounts(Counts):
    """A ``collections.Counter`` whose increases of known keys also go to their Prometheus counters,
    batched: ``flush()`` adds what accumulated since the last flush (the broker calls it once a
    second and on ``metrics()``). ``broker.counters["events_delivered"] += n`` runs for every chunk of
    every stream, and a Prometheus increment in multiprocess mode is a lock and an mmap write."""

    def __init__(self) -> None:
        super().__init__()
        self.unflushed: Counts[str] = Counts()

    def __setitem__(self, key: str, value: int) -> None:
        increase = value - self[key]
        super().__setitem__(key, value)
        if increase > 0 and key in STREAM_COUNTERS:
            self.unflushed[key] += increase

    def flush(self) -> None:
        """Add the increases since the last flush to the Prometheus counters."""
        unflushed, self.unflushed = self.unflushed, Counts()
        for key, increase in unflushed.items():
            STREAM_COUNTERS[key].inc(increase)
SIGN_IN_FAILURES = Counter("ingest_sign_in_failures", "Sign-ins with a wrong username or password.")
SIGN_INS_LIMITED = Counter("ingest_sign_ins_limited", "Sign-ins refused by the failure limits (429).")

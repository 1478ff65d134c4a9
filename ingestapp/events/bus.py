"""The event bus: how a published event reaches the streams of every worker.

Two implementations of one small interface (``start``, ``close``, ``status``); ``events.model.publish``
hands each event to the one started (``set_transport``):

- ``LocalBus`` (the embedded default): the in-process blinker signal, so one worker only.
- ``RedisStreamBus`` (when ``REDIS_URL`` is set): each event is appended to one Redis Stream
  (``XADD ... MAXLEN ~ INGEST_BUS_MAXLEN``); each worker runs one reader greenlet (``XREAD BLOCK``)
  that hands every entry to the local ``job_event`` signal, so the broker and the streams work as
  with the local bus. Streams and not pub/sub: an entry stays readable after a reader's hiccup, and
  the reader resumes after the last id it read (docs/scaling.md).

The SQL event log stays the source of truth. A reader that sees a gap in a session's ``seq`` (an
entry trimmed, or never added while Redis was down), or that reconnects after an outage, tells the
broker to make the affected streams catch up from the log (``Broker.resync``). A Redis outage ends
no stream: keepalives go on, publishing queues up to ``OUTBOX`` events, and ``status()`` says
``down`` until both greenlets reconnect. Everything here runs on the hub thread; redis-py must be
imported after gevent's monkey-patching (gunicorn's gevent worker patches before it loads the app).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.event

from ingestapp.core import metrics
from ingestapp.events import model as events
from ingestapp.events.model import Event, from_record

log = logging.getLogger(__name__)

#: Milliseconds an ``XREAD`` waits for new entries; the socket timeout is longer (redis-py would
#: otherwise take a quiet stream for a dead connection).
BLOCK_MS = 5000
SOCKET_TIMEOUT = BLOCK_MS / 1000 + 5
#: Events held while Redis is unreachable; older ones are dropped (readers backfill from the log).
OUTBOX = 100_000
#: Entries sent in one pipeline, and read in one ``XREAD``.
BATCH = 500
#: Sessions whose last seq a reader remembers, for gap detection (least recently seen forgotten).
TRACKED_SESSIONS = 10_000
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)


class Bus(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


class LocalBus:
    """The in-process bus: ``events.model.publish`` sends the blinker signal itself (one worker)."""

    def start(self) -> None:
        events.set_transport(None)
        metrics.BUS_UP.labels("local").set(1)  # in-process: never down

    def close(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"bus": "local", "bus_up": True}


class RedisStreamBus:
    """Events through one Redis Stream, read by every worker (see the module docstring).

    ``on_gap(session_id)`` is called (None: every session) when the local streams must catch up
    from the SQL log; the broker's ``resync``.
    """

    def __init__(self, url: str, stream: str, maxlen: int, on_gap: Callable[[str | None], None]) -> None:
        import redis  # after gevent's monkey-patching, which gunicorn's worker did before loading the app

        self.redis = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                url,
                max_connections=4,  # the reader's XREAD, the publisher's pipeline, spare ones
                timeout=SOCKET_TIMEOUT,  # a greenlet waits this long for a free connection
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=2,
                socket_keepalive=True,
                health_check_interval=30,
            ),
        )
        self.errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self.stream = stream
        self.maxlen = maxlen
        self.on_gap = on_gap
        self.up = False
        self.reconnects = 0
        self._outbox: deque[Event] = deque(maxlen=OUTBOX)
        self._wake = gevent.event.Event()
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._greenlets: list[gevent.Greenlet] = []
        self._connected_once = False

    # -- publishing -------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Queue ``event`` for the stream; never blocks (a greenlet sends it)."""
        self._outbox.append(event)
        self._wake.set()

    def _send_loop(self) -> None:
        failures = 0
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = [self._outbox[i] for i in range(min(BATCH, len(self._outbox)))]
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for event in batch:
                        fields = {"session_id": event.session_id, "seq": event.seq, "type": event.type,
                                  "data": event.data}
                        pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                    pipe.execute()
                except self.errors as exc:
                    # Kept for a retry; a resend after a partly executed pipeline is a duplicate,
                    # which readers drop by seq.
                    self._set_down(f"publish: {exc}")
                    gevent.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                    failures += 1
                    continue
                failures = 0
                for _ in batch:
                    if self._outbox:
                        self._outbox.popleft()

    # -- reading ----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        last_id = "$"  # only what is published from now on: streams replay older events from SQL
        failures = 0
        while True:
            try:
                if last_id == "$":
                    newest = self.redis.xrevrange(self.stream, count=1)
                    last_id = newest[0][0].decode() if newest else "0-0"
                reply = self.redis.xread({self.stream: last_id}, count=BATCH, block=BLOCK_MS)
            except self.errors as exc:
                self._set_down(f"read: {exc}")
                gevent.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                continue
            if not self.up:
                self._set_up()
            failures = 0
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    self._deliver(fields)

    def _deliver(self, fields: dict[bytes, bytes]) -> None:
        session_id = fields[b"session_id"].decode()
        seq = int(fields[b"seq"])
        last = self._last_seq.get(session_id)
        if last is not None and seq <= last:
            return  # a duplicate from a publisher's retry
        self._last_seq[session_id] = seq
        self._last_seq.move_to_end(session_id)
        if len(self._last_seq) > TRACKED_SESSIONS:
            self._last_seq.popitem(last=False)
        event = from_record(session_id, seq, fields[b"type"].decode(), fields[b"data"].decode())
        if last is not None and seq > last + 1:
            metrics.BUS_GAPS.inc()
            self.on_gap(session_id)  # the streams replay the missing events from the SQL log
        events.deliver(event)

    # -- state ------------------------------------------------------------------------------------

    def _set_down(self, why: str) -> None:
        if self.up:
            log.warning("event bus down (%s); streams keep their keepalives, events resume on reconnect", why)
        self.up = False
        metrics.BUS_UP.labels("redis").set(0)

    def _set_up(self) -> None:
        self.up = True
        metrics.BUS_UP.labels("redis").set(1)
        if self._connected_once:
            self.reconnects += 1
            metrics.BUS_RECONNECTS.inc()
            log.warning("event bus reconnected; open streams catch up from the event log")
            self._last_seq.clear()
            self.on_gap(None)  # anything may have been missed while down
        self._connected_once = True

    def start(self) -> None:
        events.set_transport(self.publish)
        metrics.BUS_UP.labels("redis").set(0)
        self._greenlets = [gevent.spawn(self._read_loop), gevent.spawn(self._send_loop)]

    def close(self) -> None:
        events.set_transport(None)
        gevent.killall(self._greenlets, block=True, timeout=2)
        self.redis.connection_pool.disconnect()

    def status(self) -> dict[str, Any]:
        return {"bus": "redis", "bus_up": self.up, "bus_reconnects": self.reconnects, "bus_outbox": len(self._outbox)}


def create_bus(config: dict[str, Any], on_gap: Callable[[str | None], None]) -> Bus:
    """The Redis bus when ``REDIS_URL`` is set and this process is gevent-patched (a gunicorn
    worker); else the local bus (the embedded default, and the ``flask ingest`` CLI, which runs
    its job in its own unpatched process)."""
    url = config.get("REDIS_URL")
    if not url:
        return LocalBus()
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        log.info("REDIS_URL is not used in this unpatched process (CLI): events stay in-process")
        return LocalBus()
    return RedisStreamBus(url, config["BUS_STREAM"], config["BUS_MAXLEN"], on_gap)

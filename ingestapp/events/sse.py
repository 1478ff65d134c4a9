"""Where an event leaves the server: the Server-Sent Events response of one client.

Wire format (WHATWG HTML §9.2): a ``retry`` field, then a ``snapshot`` event with the full state
(or, with a valid ``Last-Event-ID``, the replay of every persisted event after it), then each live
event as ``id``/``event``/``data`` lines, ``: keepalive`` comments while idle, and the end of the
response after a terminal event. A client that stops reading is dropped: a chunk whose write has
not completed within ``send_timeout`` seconds (or by the end of ``max_age``) closes the connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.lock
from sqlalchemy import Engine

from ingestapp.core.vocabulary import FINISHED_STATUSES
from ingestapp.events.broker import Broker, Subscription
from ingestapp.events.log import events_page
from ingestapp.events.model import Event, sse_frame
from ingestapp.store.db import off_hub


class SessionSource(Protocol):
    """What a stream reads a session from (the job registry, ``jobs``, which this part may not import)."""

    engine: Engine

    def state(self, session_id: str) -> dict[str, Any]:
        """The session's state JSON (its snapshot); raises JobNotFound for an unknown session."""
        ...

KEEPALIVE = b": keepalive\n\n"
#: Queued events written together in one chunk when a stream wakes up (one send, not one each).
MAX_BATCH = 64
CATCH_UP_BATCH = 500  # events per chunk of a catch-up (and per read of the event log)
#: Reads of the event log at once in this process (replays of streams that were away or fell
#: behind), off the hub: many full replays take turns and cannot starve the live streams.
LOG_READERS = gevent.lock.BoundedSemaphore(2)
_READ = 1  # libev's EV_READ


@dataclass(frozen=True)
class StreamSettings:
    """``INGEST_SSE_*`` settings: retry in ms; keepalive, max_age and send_timeout in seconds."""

    retry_ms: int
    keepalive: float
    max_age: float
    send_timeout: float = 30.0


def parse_last_event_id(value: str | None) -> int | None:
    """The ``Last-Event-ID`` as a seq: None when absent, -1 (an unknown id) when it is not ASCII
    digits, as every id this server sends is, or longer than any 64-bit seq (19 digits)."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else -1


def is_finished(state: dict[str, Any]) -> bool:
    return state["status"] in FINISHED_STATUSES


class EventStream:
    """The body of one SSE response: an iterator of byte chunks (never an empty one).

    Subscribes at construction, before the state is read, so no event falls between the
    snapshot (or replay) and the live events; ``seq`` comparisons drop any event seen twice.
    Raises JobNotFound (having released its subscription) for an unknown session.
    ``close()`` releases the subscription; it is idempotent and also runs when the generator ends.
    """

    def __init__(
        self,
        registry: SessionSource,
        broker: Broker,
        settings: StreamSettings,
        session_id: str,
        last_event_id: int | None,
        client_socket: socket.socket | None = None,
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.settings = settings
        self.session_id = session_id
        self.subscription: Subscription = broker.subscribe(session_id)
        try:
            self.state = registry.state(session_id)
        except Exception:
            broker.unsubscribe(self.subscription)  # e.g. JobNotFound: no stream will start
            raise
        #: True when the client already has the last event of a finished session (answer 204).
        self.up_to_date = is_finished(self.state) and last_event_id == self.state["last_event_id"]
        self.resume_from = last_event_id
        if last_event_id is not None and not 0 <= last_event_id <= self.state["last_event_id"]:
            self.resume_from = None  # unknown id: start again from a fresh snapshot
        self.reset = last_event_id is not None and self.resume_from is None
        self.last_sent = 0
        self._socket = client_socket
        self._watcher: Any = None
        self._send_timer: Any = None  # the send_timeout timer, re-armed for each chunk (``_guard_write``)
        self._last_activity = time.monotonic()  # when an event (not a keepalive) was last sent

    def __iter__(self) -> Iterator[bytes]:
        """The chunks; with a client socket, each write must complete in time (``_guard_write``)."""
        try:
            if self._socket is None:
                yield from self._chunks()
                return
            self._watch_disconnect(self._socket)
            for chunk in self._chunks():
                timer = self._guard_write(self._socket)
                try:
                    yield chunk  # gunicorn writes it before asking for the next one
                finally:
                    timer.stop()
        finally:
            self.close()

    def _chunks(self) -> Iterator[bytes]:
        yield f"retry: {self.settings.retry_ms}\n\n".encode()
        if self.resume_from is None:
            finished = is_finished(self.state)
            yield self._snapshot()
            if finished:
                return
        else:
            self.last_sent = self.resume_from
            self.subscription.overflowed = True  # replay from the log, then go live
        yield from self._live()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._send_timer is not None:
            self._send_timer.stop()
            self._send_timer = None
        self.broker.unsubscribe(self.subscription)

    def _snapshot(self) -> bytes:
        state, self.state = self.state, {}  # only the snapshot needs it: free it for the long wait
        self.last_sent = state["last_event_id"]
        return sse_frame(json.dumps({**state, "reset": self.reset}, separators=(",", ":")), "snapshot", self.last_sent)

    def _live(self) -> Iterator[bytes]:
        subscription = self.subscription
        while True:
            if subscription.overflowed:
                self._last_activity = time.monotonic()  # a catch-up is activity: its writes get max_age
                for batch in self._catch_up():
                    chunk, terminal = self._join(batch)
                    if chunk:  # an empty chunk would be taken for the end of the response
                        yield chunk
                    if terminal:
                        return
                self._last_activity = time.monotonic()
                continue
            event = subscription.get(timeout=self.settings.keepalive)
            if subscription.closed:
                return
            if event is None:
                if subscription.overflowed:
                    continue
                if time.monotonic() - self._last_activity >= self.settings.max_age:
                    return  # stale: the browser reconnects and resumes with Last-Event-ID
                yield KEEPALIVE
                continue
            if event.seq <= self.last_sent:
                continue
            self._last_activity = time.monotonic()
            batch = [event]
            while len(batch) < MAX_BATCH and (queued := subscription.get_nowait()) is not None:
                batch.append(queued)
            chunk, terminal = self._join(batch)
            yield chunk
            if terminal:
                return

    def _join(self, events: list[Event]) -> tuple[bytes, bool]:
        """One chunk of the events not sent yet, up to the first terminal one; and whether one was."""
        frames = []
        terminal = False
        for event in events:
            if event.seq > self.last_sent:
                self.last_sent = event.seq
                frames.append(event.frame)
                if event.terminal:
                    terminal = True
                    break
        # Counted once per chunk, not per event: this runs for every event of every stream (the
        # broker mirrors the sum to Prometheus once a second, ``MirroredCounts``).
        self.broker.counters["events_delivered"] += len(frames)
        return b"".join(frames), terminal

    def _catch_up(self) -> Iterator[list[Event]]:
        """Batches of the events after ``last_sent``, from the broker's memory when it holds them
        all, else from the persisted log; afterwards the live queue takes over."""
        self.subscription.overflowed = False
        self.subscription.drop_pending()
        recent = self.broker.recent_after(self.session_id, self.last_sent)
        if recent is not None:  # taken at once: what comes later goes to the live queue
            for start in range(0, len(recent), CATCH_UP_BATCH):
                batch = recent[start:start + CATCH_UP_BATCH]
                self.broker.counters["events_replayed"] += len(batch)
                yield batch
            return
        # Events are committed before they are published: the log holds every one sent live.
        while batch := self._read_log(self.last_sent):
            self.broker.counters["events_replayed"] += len(batch)
            yield batch  # the stream sends it, and sets ``last_sent``, before the next read

    def _read_log(self, after_seq: int) -> list[Event]:
        with LOG_READERS:
            return off_hub(events_page, self.registry.engine, self.session_id, after_seq, CATCH_UP_BATCH)

    def _guard_write(self, sock: Any) -> Any:
        """A started libev timer that drops the client unless the write of the chunk being
        yielded completes within ``send_timeout``, or before ``max_age`` runs out.

        gunicorn writes the chunk (``sendall``, blocking this greenlet while the client's
        socket buffer is full) before it asks for the next one, and the caller stops the timer
        then. If it fires, the socket is shut down: the blocked ``sendall`` fails with EPIPE,
        which gunicorn treats as a gone client, and closes this stream.

        This runs for every chunk of every stream, so the usual case re-arms the stream's one
        ``send_timeout`` timer (libev restarts a stopped timer with its full interval) instead of
        making a timer and a callback per chunk; only the last chunks before ``max_age`` get a
        shorter timer of their own.
        """
        left = self._last_activity + self.settings.max_age - time.monotonic()
        if left < self.settings.send_timeout:
            timer = gevent.get_hub().loop.timer(max(0.0, left))
        else:
            if self._send_timer is None:
                self._send_timer = gevent.get_hub().loop.timer(self.settings.send_timeout)
            timer = self._send_timer
        timer.start(self._drop_slow_client, sock)
        return timer

    def _drop_slow_client(self, sock: Any) -> None:
        """The write did not complete in time: end the stream (a hub callback: never blocks)."""
        self._send_timer = None  # a timer that fired restarts at once in gevent: never reuse it
        self.broker.counters["slow_client_drops"] += 1
        self.subscription.close()
        with contextlib.suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)

    def _watch_disconnect(self, sock: Any) -> None:
        """Close the stream as soon as the client's socket reports EOF, even while idle.

        A libev read watcher on gunicorn's client socket (``environ["gunicorn.socket"]``) costs no
        greenlet. Its callback runs in the hub, so it only peeks without blocking; MSG_PEEK leaves
        any bytes the client sends for the server (an SSE client sends none).
        """
        raw = getattr(sock, "_sock", sock)  # gevent's socket wraps a non-blocking OS socket

        watcher = gevent.get_hub().loop.io(sock.fileno(), _READ)

        def on_readable() -> None:
            try:
                data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            watcher.stop()
            if not data:
                self.broker.counters["disconnects"] += 1
                self.subscription.close()

        watcher.start(on_readable)
        self._watcher = watcher


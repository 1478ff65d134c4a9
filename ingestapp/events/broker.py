"""Fan-out: one blinker receiver routes each event to the subscriptions of its session.

A ``Subscription`` is one client's bounded queue. Once it is half full (the client is falling
behind), undelivered ``progress``/``stage`` events are conflated: a newer one replaces an older one
not yet sent, keeping ``seq`` order. ``file``, ``error`` and terminal events are never dropped. A
client that keeps up gets every event. A subscription that still fills up is marked
``overflowed``, drops its queue, and the stream catches up instead, as a reconnecting client
would: from the broker's copy of the session's recent events when it holds them all
(``recent_after``: one copy, however many streams fell behind), else from the persisted log.
Everything here runs on the hub thread.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict, deque
from itertools import islice
from typing import Any

import gevent.event

from ingestapp.core.metrics import OPEN_STREAMS, MirroredCounts
from ingestapp.events.model import Event, job_event

#: Events kept in memory per watched session for streams that fell behind (about 3 MB each). Without
#: it, thousands of streams overflowing at once would each read the SQL log (a connection apiece).
RECENT_EVENTS = 5000
#: Seconds between two mirrorings of the stream counters to Prometheus (``GET /metrics`` lags that much).
FLUSH_SECONDS = 1.0


class Subscription:
    """A client's pending events for one session, at most ``maxsize`` of them."""

    def __init__(self, session_id: str, maxsize: int) -> None:
        self.session_id = session_id
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self._pending: OrderedDict[int, Event] = OrderedDict()
        self._seq_by_key: dict[str, int] = {}
        self._ready = gevent.event.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, event: Event) -> bool:
        """Queue ``event`` without blocking; True when it superseded a queued one (conflation)."""
        if self.closed or self.overflowed:
            return False
        conflated = False
        if event.conflation_key is not None and len(self._pending) * 2 >= self.maxsize:
            older = self._seq_by_key.get(event.conflation_key)
            conflated = older is not None and self._pending.pop(older, None) is not None
        if len(self._pending) >= self.maxsize:
            self.overflowed = True
            self.drop_pending()
        else:
            self._pending[event.seq] = event
            if event.conflation_key is not None:
                self._seq_by_key[event.conflation_key] = event.seq
        self._ready.set()
        return conflated

    def get(self, timeout: float) -> Event | None:
        """The oldest queued event, waiting up to ``timeout`` seconds; None on timeout, when
        closed, or when overflowed (check the flags)."""
        if not self._pending and not self.closed and not self.overflowed:
            self._ready.clear()
            self._ready.wait(timeout)
        if not self._pending or self.closed:
            return None
        seq, event = self._pending.popitem(last=False)
        if event.conflation_key is not None and self._seq_by_key.get(event.conflation_key) == seq:
            del self._seq_by_key[event.conflation_key]
        return event

    def get_nowait(self) -> Event | None:
        """The oldest queued event, or None at once."""
        return self.get(0) if self._pending and not self.closed else None

    def drop_pending(self) -> None:
        self._pending.clear()
        self._seq_by_key.clear()

    def catch_up_from_log(self) -> None:
        """Drop what is queued and wake the stream, which then replays from the event log."""
        self.overflowed = True
        self.drop_pending()
        self._ready.set()

    def close(self) -> None:
        """Wake the stream so it ends (client gone, or server shutting down)."""
        self.closed = True
        self._ready.set()


class Broker:
    """Routes ``job_event`` signals to subscriptions and counts what streams do."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self.counters: MirroredCounts = MirroredCounts()  # also feeds the Prometheus counters
        self.closing = False  # set at shutdown: streams opened from then on end after their start
        #: The latest events of each watched session, consecutive in seq (see ``recent_after``).
        self.recent: dict[str, deque[Event]] = {}
        # blinker holds receivers weakly; the app keeps this broker (and so the bound method) alive.
        job_event.connect(self._on_event)
        # Mirror the counters to Prometheus once a second, not per chunk (``MirroredCounts``); an
        # unreferenced timer, so it keeps no hub loop alive.
        self._flush_timer = gevent.get_hub().loop.timer(FLUSH_SECONDS, FLUSH_SECONDS, ref=False)
        self._flush_timer.start(gevent.spawn, self.counters.flush)  # a greenlet: the hub never takes a lock

    def subscribe(self, session_id: str) -> Subscription:
        subscription = Subscription(session_id, self.queue_size)
        self.subscriptions[session_id].add(subscription)
        OPEN_STREAMS.inc()
        if self.closing:
            subscription.close()  # the client gets its snapshot, then reconnects to the next worker
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Release a subscription; safe to call more than once."""
        subscription.close()
        subscribers = self.subscriptions.get(subscription.session_id)
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            OPEN_STREAMS.dec()
            if not subscribers:
                del self.subscriptions[subscription.session_id]
                self.recent.pop(subscription.session_id, None)

    def close_all(self) -> None:
        """End every open stream, and every stream opened later (graceful shutdown)."""
        self.closing = True
        for subscribers in list(self.subscriptions.values()):
            for subscription in list(subscribers):
                subscription.close()

    def resync(self, session_id: str | None = None) -> None:
        """Make the streams of ``session_id`` (None: all) catch up from the event log: the bus
        may have missed events (a gap in seq, a reconnection)."""
        targets = [session_id] if session_id is not None else list(self.subscriptions)
        for sid in targets:
            self.recent.pop(sid, None)  # it may miss events too
            for subscription in self.subscriptions.get(sid, ()):
                subscription.catch_up_from_log()

    def recent_after(self, session_id: str, seq: int) -> list[Event] | None:
        """The session's events after ``seq``, in order, if memory holds every one of them; else
        None (the caller reads the SQL log)."""
        recent = self.recent.get(session_id)
        if not recent or recent[0].seq > seq + 1:
            return None
        return list(islice(recent, max(0, seq + 1 - recent[0].seq), None))

    def _on_event(self, session_id: str, event: Event) -> None:
        self.counters["events_emitted"] += 1
        subscribers = self.subscriptions.get(session_id, ())
        for subscription in subscribers:
            if subscription.put(event):
                self.counters["events_conflated"] += 1
        if subscribers:
            self._remember(session_id, event)

    def _remember(self, session_id: str, event: Event) -> None:
        recent = self.recent.setdefault(session_id, deque(maxlen=RECENT_EVENTS))
        if recent and event.seq <= recent[-1].seq:
            return  # already held
        if recent and event.seq != recent[-1].seq + 1:
            recent.clear()  # a hole (the bus resyncs the streams from the log): start again here
        recent.append(event)

    def metrics(self) -> dict[str, Any]:
        """Counters for ``GET /api/ingest/metrics``."""
        self.counters.flush()
        by_session = {sid: len(subs) for sid, subs in self.subscriptions.items()}
        return {
            "open_streams": sum(by_session.values()),
            "open_streams_by_session": by_session,
            "queued_events": sum(len(sub) for subs in self.subscriptions.values() for sub in subs),
            **{name: self.counters[name] for name in (
                "events_emitted", "events_delivered", "events_conflated", "events_replayed", "disconnects",
                "slow_client_drops",
            )},
        }

    def disconnect(self) -> None:
        """Stop receiving events (the app is being torn down)."""
        job_event.disconnect(self._on_event)
        self._flush_timer.stop()
        self.counters.flush()

"""Where an event is stored: a running session's rows (events, items, errors, state), written in
batches, and the reads that replay them.

All calls happen on the gevent hub thread. A batch is one short transaction, so readers (status,
stream replay) never see an item without the events and state that announced it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent.lock
from sqlalchemy import Engine, insert, select, update

from .events import Event, from_record
from .models import ErrorEntry, EventRecord, IngestSession, Item

#: Rows buffered before a write is forced, besides the periodic flush.
MAX_PENDING = 500


class SessionLog:
    """Buffers one session's new rows; ``flush()`` writes them in one transaction, then hands the
    events it wrote to ``publish`` in ``seq`` order (so every published event is in the log)."""

    def __init__(self, engine: Engine, session_id: str, publish: Callable[[Event], None] | None = None) -> None:
        self.engine = engine
        self.session_id = session_id
        self.publish = publish
        self._events: list[Event] = []
        self._items: list[dict[str, Any]] = []
        self._errors: list[dict[str, Any]] = []
        self._session_values: dict[str, Any] = {}
        self._lock = gevent.lock.Semaphore()

    @property
    def pending(self) -> int:
        return len(self._events) + len(self._items) + len(self._errors)

    def add_event(self, event: Event) -> None:
        self._events.append(event)
        self._session_values["last_event_id"] = event.seq

    def add_item(self, row: dict[str, Any]) -> None:
        self._items.append({"session_id": self.session_id, **row})

    def add_error(self, entry: dict[str, Any]) -> None:
        self._errors.append({"session_id": self.session_id, **entry})

    def set_state(self, state: dict[str, Any]) -> None:
        self._session_values.update(state=state, status=state["status"])

    def flush(self) -> None:
        """Write everything buffered; a no-op when nothing is.

        A database that yields to the hub during I/O (PostgreSQL under gevent) lets other
        greenlets add rows and flush meanwhile: the buffers are taken before writing, and one
        flush at a time runs, and it publishes what it wrote before the next one starts: events
        are published in ``seq`` order, each after it is committed.
        """
        with self._lock:
            if not (self.pending or self._session_values):
                return
            items, errors, events, values = self._items, self._errors, self._events, self._session_values
            self._events, self._items, self._errors, self._session_values = [], [], [], {}
            with self.engine.begin() as conn:
                event_rows = [{"session_id": e.session_id, "seq": e.seq, "type": e.type, "data": e.data}
                              for e in events]
                for model, rows in ((Item, items), (ErrorEntry, errors), (EventRecord, event_rows)):
                    if rows:
                        conn.execute(insert(model), rows)
                if values:
                    conn.execute(update(IngestSession).where(IngestSession.id == self.session_id).values(**values))
            if self.publish is not None:
                for event in events:
                    self.publish(event)


def events_after(engine: Engine, session_id: str, after_seq: int, batch: int = 500) -> Iterator[list[Event]]:
    """Persisted events of a session with ``seq > after_seq``, in order, ``batch`` at a time.

    No connection is held between batches, so the caller may yield to the hub in between.
    """
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(EventRecord.seq, EventRecord.type, EventRecord.data)
                .where(EventRecord.session_id == session_id, EventRecord.seq > after_seq)
                .order_by(EventRecord.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        yield [from_record(session_id, seq, event_type, data) for seq, event_type, data in rows]
        after_seq = rows[-1].seq

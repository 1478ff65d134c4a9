"""Where an event is stored, and the one way an event comes to be: built (``events.model.make_event``)
with the session's next ``seq``, inserted by :func:`store` in a transaction and, once that is
committed, published (:func:`publish_all`).

Two writers take that path. A running job buffers its rows (events, items, errors) in a
:class:`SessionLog` (``add_event``) and writes them in batches with its state, under its lease
(``jobs.writer``); a session that no process runs (its lease expired, or it was cancelled while
queued for the work tier) gets its one last event by :func:`record` (``jobs.leases``).
``events_after`` reads the events back for stream replay.

All calls happen on the gevent hub thread. A batch is one short transaction, so readers (status,
stream replay) never see an item without the events and state that announced it; events are
published only after their transaction is committed, so every id a client sees is durable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from ingestapp.events.model import Event, from_record, make_event, publish
from ingestapp.store import db
from ingestapp.store.models import ErrorEntry, EventRecord, IngestSession, Item


def record(conn: Connection, session_id: str, seq: int, event_type: str, fields: dict[str, Any]) -> Event:
    """Build the event ``seq`` of a session no job runs and store it, in ``conn``'s transaction;
    publish it (``publish_all``) once that is committed."""
    event = make_event(session_id, seq, event_type, fields)
    store(conn, [event])
    return event


def store(conn: Connection, events: list[Event]) -> None:
    """Insert ``events`` into the event log, in ``conn``'s transaction (publish them after it)."""
    if events:
        rows = [{"session_id": e.session_id, "seq": e.seq, "type": e.type, "data": e.data} for e in events]
        conn.execute(insert(EventRecord), rows)


def publish_all(events: list[Event]) -> None:
    """Publish committed ``events``, in order (``events.model.publish``)."""
    for event in events:
        publish(event)


class LeaseLost(RuntimeError):
    """The session's lease is no longer this process's (it expired and was reaped): stop writing."""


class SessionLog:
    """Buffers one session's new rows; ``commit()`` writes them in one transaction, fenced by the lease."""

    def __init__(self, engine: Engine, session_id: str, owner: str, lease: float) -> None:
        self.engine = engine
        self.session_id = session_id
        self.owner = owner
        self.lease = lease  # seconds
        self._events: list[Event] = []
        self._items: list[dict[str, Any]] = []
        self._errors: list[dict[str, Any]] = []

    def add_event(self, seq: int, event_type: str, fields: dict[str, Any]) -> None:
        """Build the session's event ``seq`` and buffer it for the next ``commit``."""
        self._events.append(make_event(self.session_id, seq, event_type, fields))

    def add_item(self, row: dict[str, Any]) -> None:
        """Buffer an item row (``store.models.Item`` columns but ``session_id``) for the next ``commit``."""
        self._items.append({"session_id": self.session_id, **row})

    def add_error(self, entry: dict[str, Any]) -> None:
        """Buffer an error entry (``{file, stage, message, time}``) for the next ``commit``."""
        self._errors.append({"session_id": self.session_id, **entry})

    def commit(self, state: dict[str, Any], release: bool = False) -> tuple[list[Event], bool]:
        """Write everything buffered with ``state`` and renew the lease (or release it), in one
        transaction. Returns the events written, in order, and whether a cancel was requested.

        The buffers are emptied first: rows of a batch that fails are dropped, never retried.
        Raises LeaseLost when this process no longer holds the lease (nothing is written), or the
        database's error (SQLAlchemy ``DBAPIError``: locked past its timeout, disk full, ...).
        """
        events, items, errors = self._events, self._items, self._errors
        self._events, self._items, self._errors = [], [], []
        lease = {"lease_owner": None, "lease_expires_at": None} if release else {
            "lease_expires_at": time.time() + self.lease
        }
        with db.begin(self.engine) as conn:
            # The fenced UPDATE comes first: it takes the write lock and decides whether we may write.
            held = conn.execute(
                update(IngestSession)
                .where(IngestSession.id == self.session_id, IngestSession.lease_owner == self.owner)
                .values(status=state["status"], state=state, last_event_id=state["last_event_id"], **lease)
            ).rowcount
            if not held:
                raise LeaseLost(self.session_id)
            if items:
                conn.execute(insert(Item), items)
            if errors:
                conn.execute(insert(ErrorEntry), errors)
            store(conn, events)
            cancel = conn.scalar(select(IngestSession.cancel_requested).where(IngestSession.id == self.session_id))
        return events, bool(cancel)


def events_after(engine: Engine, session_id: str, after_seq: int, batch: int = 500) -> Iterator[list[Event]]:
    """Persisted events of a session with ``seq > after_seq``, in order, ``batch`` at a time.

    No connection is held between batches, so the caller may yield to the hub in between.
    """
    while events := events_page(engine, session_id, after_seq, batch):
        yield events
        after_seq = events[-1].seq


def events_page(engine: Engine, session_id: str, after_seq: int, limit: int) -> list[Event]:
    """The first ``limit`` persisted events of a session with ``seq > after_seq``, in order (one
    query; the SSE replay runs it off the hub, ``events.sse``)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(EventRecord.seq, EventRecord.type, EventRecord.data)
            .where(EventRecord.session_id == session_id, EventRecord.seq > after_seq)
            .order_by(EventRecord.seq)
            .limit(limit)
        ).all()
    return [from_record(session_id, seq, event_type, data) for seq, event_type, data in rows]

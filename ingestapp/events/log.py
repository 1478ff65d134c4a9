"""Where an event is stored: a running session's rows (events, items, errors, state), written in
batches under the job's lease, and the reads that replay them.

All calls happen on the gevent hub thread. A batch is one short transaction, so readers (status,
stream replay) never see an item without the events and state that announced it. Events are
published only after their batch is committed (``jobs.Job``), so every id a client sees is durable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, insert, select, update

from ingestapp.events.model import Event, from_record
from ingestapp.store.models import ErrorEntry, EventRecord, IngestSession, Item


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

    def add_event(self, event: Event) -> None:
        self._events.append(event)

    def add_item(self, row: dict[str, Any]) -> None:
        self._items.append({"session_id": self.session_id, **row})

    def add_error(self, entry: dict[str, Any]) -> None:
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
        with self.engine.begin() as conn:
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
            if events:
                rows = [{"session_id": e.session_id, "seq": e.seq, "type": e.type, "data": e.data} for e in events]
                conn.execute(insert(EventRecord), rows)
            cancel = conn.scalar(select(IngestSession.cancel_requested).where(IngestSession.id == self.session_id))
        return events, bool(cancel)


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

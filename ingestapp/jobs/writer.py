"""A job's emit path and its group-commit writer.

``emit`` gives an event the session's next ``seq`` and buffers it in the job's ``SessionLog`` (the
only place a running job's events are born). The writer greenlet (``run``) commits what is pending
as soon as its previous commit is done, so events emitted meanwhile share the next transaction
(group commit), or every fifth of the lease when idle, to renew it and read a cancel request; only
then are the committed events published. The job makes the last commit itself (``final_commit``),
releasing the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from ingestapp.events.log import LeaseLost, SessionLog, publish_all

log = logging.getLogger(__name__)

FINAL_WRITE_ATTEMPTS = 3  # a job's last commit is retried (1 s apart) before the reaper is left to it


class Writer:
    """The emit path and writer of one job run.

    ``snapshot(last_event_id)`` is the job's state JSON as of now; ``on_commit(cancel, release)``
    is called after each commit with whether the row asked for a cancel. ``last_event_id``: the
    session's last event id so far (a resumed session goes on from it).
    """

    def __init__(
        self,
        session_log: SessionLog,
        lease: float,
        last_event_id: int,
        snapshot: Callable[[int], dict[str, Any]],
        on_commit: Callable[[bool, bool], None],
    ) -> None:
        self.log = session_log
        self.lease = lease  # seconds
        self.seq = last_event_id
        self.snapshot = snapshot
        self.on_commit = on_commit
        #: The state as of the last commit: what the status API shows, and what the database holds.
        self.committed_state = snapshot(last_event_id)
        self._pending = gevent.event.Event()  # set by emit: there is something to commit
        self._stopping = False

    def emit(self, event_type: str, **fields: Any) -> None:
        """Stamp and buffer an event (hub thread only); it is published once committed, so an id a
        client sees is never handed to another event, even after a crash, and a client that sees
        ``complete`` can fetch every item at once."""
        self.seq += 1
        self.log.add_event(self.seq, event_type, fields)
        self._pending.set()

    def commit(self, release: bool = False) -> None:
        """Write the buffered rows with the current state (renewing the lease, or releasing it),
        then publish the events written. Raises LeaseLost or the database's error."""
        state = self.snapshot(self.seq)
        events, cancel = self.log.commit(state, release)
        self.committed_state = state
        publish_all(events)
        self.on_commit(cancel, release)

    def run(self) -> None:
        """The writer greenlet. Raises what ``commit`` raises.

        Only this greenlet commits while the job runs (the job makes the final commit after it
        ended), so commits never overlap even where the database yields to the hub during I/O
        (PostgreSQL under gevent), and events reach the bus in ``seq`` order, each after its commit
        (a Redis bus reader takes a hole in ``seq`` for a gap)."""
        heartbeat = self.lease / 5
        while True:
            self._pending.wait(heartbeat)
            self._pending.clear()
            if self._stopping:
                return
            self.commit()

    def stop(self) -> None:
        """End ``run`` without another commit (the caller joins its greenlet)."""
        self._stopping = True
        self._pending.set()

    def final_commit(self) -> None:
        """The last write: everything left and the final state, releasing the lease; retried."""
        for attempt in range(FINAL_WRITE_ATTEMPTS):
            try:
                self.commit(release=True)
                return
            except LeaseLost:
                return
            except Exception:
                log.exception("session %s: final write failed (attempt %d)", self.log.session_id, attempt + 1)
                gevent.sleep(1)

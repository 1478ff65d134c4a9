"""Session leases and crash recovery.

A session has one owner at a time: a lease in its row (``lease_owner``, ``lease_expires_at``) taken
and renewed by conditional UPDATEs, so it holds across processes and hosts. A new session is created
leased to its registry (``registry.JobRegistry.start``); a resume takes an ``interrupted`` session's
lease here (``take_interrupted``); the job's every commit renews it and its last one releases it
(``events.log.SessionLog.commit``). ``reap_expired`` (run periodically by every registry) marks
sessions whose lease expired, i.e. whose process died, ``interrupted``.

A session can also be ``queued`` with no owner: waiting for a worker of the scale-out work tier
(``WAITING``: ``take_queued``), or for its turn (``awaits_turn``: its user runs as many sessions as
allowed, ``turns.py``). Neither is reaped while it waits, and a cancel stops either at once
(``cancel_queued``). ``record_change`` gives such a session, which no job runs, the event saying
what became of it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
from sqlalchemy import Connection, Engine, and_, false, not_, or_, select, update

from ingestapp.core.errors import JobConflict, JobNotFound
from ingestapp.core.vocabulary import RUNNING_STATUSES, TERMINAL_EVENT_OF, EventType, SessionStatus
from ingestapp.events.log import publish_all, record
from ingestapp.events.model import Event
from ingestapp.jobs.state import progress_of, stopped_state
from ingestapp.store import db
from ingestapp.store.models import IngestSession

log = logging.getLogger(__name__)

#: A queued session that no process owns yet: waiting for a worker, or for its turn.
UNOWNED = and_(IngestSession.status == SessionStatus.QUEUED, IngestSession.lease_owner.is_(None))
#: A session queued for the work tier, waiting for a worker: it has no owner yet, and had its turn.
WAITING = and_(UNOWNED, IngestSession.awaits_turn == false())


def new_owner() -> str:
    """A lease owner id, unique per process start (and per app in one process): ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def take_interrupted(conn: Connection, session_id: str, owner: str | None, lease: float) -> None:
    """Take an ``interrupted`` session's lease for ``owner`` for ``lease`` seconds (no owner: it
    waits for a worker of the work tier), set it ``queued`` and clear its cancel request, in
    ``conn``'s transaction.

    One conditional UPDATE, so of racing resumes (from any process) exactly one succeeds. Raises
    JobNotFound, or JobConflict when the session is not interrupted (or another resume took it first).
    """
    taken = conn.execute(
        update(IngestSession)
        .where(
            IngestSession.id == session_id,
            IngestSession.status == SessionStatus.INTERRUPTED,
            IngestSession.lease_owner.is_(None),
        )
        .values(
            status=SessionStatus.QUEUED,
            lease_owner=owner,
            lease_expires_at=None if owner is None else time.time() + lease,
            cancel_requested=False,
        )
    ).rowcount
    if not taken:
        status = conn.scalar(select(IngestSession.status).where(IngestSession.id == session_id))
        if status is None:
            raise JobNotFound(session_id)
        raise JobConflict(f"only an interrupted session can be resumed (it is {status})")


def take_queued(conn: Connection, session_id: str, owner: str, lease: float) -> bool:
    """Take a session waiting for the work tier for ``owner`` for ``lease`` seconds, in ``conn``'s
    transaction; False when it is not waiting (another worker took it, or it was cancelled)."""
    return bool(conn.execute(
        update(IngestSession)
        .where(IngestSession.id == session_id, WAITING)
        .values(lease_owner=owner, lease_expires_at=time.time() + lease)
    ).rowcount)


def cancel_queued(conn: Connection, session_id: str) -> Event | None:
    """Cancel a session waiting for the work tier or for its turn, in ``conn``'s transaction; its
    ``cancelled`` event (to publish after the commit), or None when it is not waiting."""
    return _stop(conn, session_id, SessionStatus.CANCELLED, UNOWNED)


def spawn_reaper(
    engine: Engine, lease: float, on_reaped: Callable[[str], None], after_pass: Callable[[], None]
) -> gevent.Greenlet:
    """Reap expired leases now, then every fifth of ``lease`` (seconds), in a greenlet that logs and
    survives any error, calling ``on_reaped(session_id)`` for each session reaped, then
    ``after_pass()`` (the registry gives waiting sessions their turns). A session whose process
    died is ``interrupted`` at most about 1.2 leases after its last commit. A pass that comes over
    a lease late (this process stood still) is skipped, so the jobs of this process renew first."""

    def reap() -> None:
        try:
            for session_id in reap_expired(engine):
                on_reaped(session_id)
            after_pass()
        except Exception:
            log.exception("the reaper's pass failed; retrying")

    def reap_forever() -> None:
        while True:
            went_to_sleep = time.time()
            gevent.sleep(lease / 5)
            if time.time() - went_to_sleep > lease:
                # This process stood still for over a lease (a suspended machine, a paused VM): its
                # own jobs could not renew, so their leases lapsed on the wall clock the lease is
                # kept in. Their writers renew within a fifth of it of running again; a pass now
                # would mark them interrupted from under them. The next pass reaps what is dead.
                continue
            reap()

    reap()

    return gevent.spawn(reap_forever)


def reap_expired(engine: Engine) -> list[str]:
    """Mark running sessions whose lease expired (their process died or stalled) ``interrupted``,
    release the lease, and return their ids.

    Each gets a ``progress`` event saying so, appended to its log and then published, so a client
    resuming with Last-Event-ID learns it too. Each session is taken by a conditional UPDATE, so
    reapers of several processes never both take one, and a lost owner's late writes are refused
    (they are fenced on ``lease_owner``). A session waiting for the work tier or for its turn has no
    lease to expire.
    """
    now = time.time()
    expired = and_(
        or_(IngestSession.lease_expires_at.is_(None), IngestSession.lease_expires_at < now), not_(UNOWNED)
    )
    with engine.connect() as conn:
        candidates = conn.scalars(
            select(IngestSession.id).where(IngestSession.status.in_(RUNNING_STATUSES), expired)
        ).all()
    reaped: list[Event] = []
    for session_id in candidates:
        with db.begin(engine) as conn:
            running = and_(IngestSession.status.in_(RUNNING_STATUSES), expired)
            event = _stop(conn, session_id, SessionStatus.INTERRUPTED, running)
        if event is not None:
            log.warning("session %s: its lease expired; marked interrupted", session_id)
            reaped.append(event)
    publish_all(reaped)
    return [event.session_id for event in reaped]


def _stop(conn: Connection, session_id: str, status: SessionStatus, condition: Any) -> Event | None:
    """Give a session that no process runs the final ``status`` if ``condition`` still holds, with
    the event that says so (``progress`` for ``interrupted``, else the terminal event) stored by
    the event log (``events.log.record``), in ``conn``'s transaction; the event to publish after
    the commit, or None."""
    taken = conn.execute(  # first, so the transaction holds the write lock from here on
        update(IngestSession)
        .where(IngestSession.id == session_id, condition)
        .values(status=status, lease_owner=None, lease_expires_at=None, awaits_turn=False,
                last_event_id=IngestSession.last_event_id + 1)
    ).rowcount
    if not taken:
        return None
    return record_change(conn, session_id, lambda state: stopped_state(state, status))


def record_change(conn: Connection, session_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Event:
    """The event saying what became of a session that no job runs, whose row was just updated
    (its ``last_event_id`` bumped: that is the event's seq), in ``conn``'s transaction: its persisted
    state becomes ``change(state)``, and the event (the terminal one of a finished status, else
    ``progress``) is stored by the event log (``events.log.record``). Publish it after the commit."""
    row = conn.execute(
        select(IngestSession.state, IngestSession.last_event_id).where(IngestSession.id == session_id)
    ).one()
    seq = row.last_event_id
    state = {**change(row.state), "last_event_id": seq}
    progress = progress_of(state)
    event_type = TERMINAL_EVENT_OF.get(state["status"], EventType.PROGRESS)
    data = progress if event_type == EventType.PROGRESS else {"message": None, **progress}
    event = record(conn, session_id, seq, event_type, data)
    conn.execute(update(IngestSession).where(IngestSession.id == session_id).values(state=state))
    return event

"""Session leases and crash recovery.

A session has one owner at a time: a lease in its row (``lease_owner``, ``lease_expires_at``) taken
and renewed by conditional UPDATEs, so it holds across processes and hosts. A new session is created
leased to its registry (``jobs.JobRegistry.start``); a resume takes an ``interrupted`` session's
lease here (``take_interrupted``); the job's every commit renews it and its last one releases it
(``eventlog.SessionLog.commit``). ``reap_expired`` (run periodically by every registry) marks
sessions whose lease expired, i.e. whose process died, ``interrupted``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

import gevent
from sqlalchemy import Connection, Engine, insert, or_, select, update

from .errors import JobConflict, JobNotFound
from .events import Event, make_event, publish
from .models import EventRecord, IngestSession
from .progress import stopped_state
from .vocabulary import RUNNING_STATUSES

log = logging.getLogger(__name__)


def new_owner() -> str:
    """A lease owner id, unique per process start (and per app in one process): ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def take_interrupted(conn: Connection, session_id: str, owner: str, lease: float) -> None:
    """Take an ``interrupted`` session's lease for ``owner`` for ``lease`` seconds, set it ``queued``
    and clear its cancel request, in ``conn``'s transaction.

    One conditional UPDATE, so of racing resumes (from any process) exactly one succeeds. Raises
    JobNotFound, or JobConflict when the session is not interrupted (or another resume took it first).
    """
    taken = conn.execute(
        update(IngestSession)
        .where(
            IngestSession.id == session_id,
            IngestSession.status == "interrupted",
            IngestSession.lease_owner.is_(None),
        )
        .values(
            status="queued",
            lease_owner=owner,
            lease_expires_at=time.time() + lease,
            cancel_requested=False,
        )
    ).rowcount
    if not taken:
        status = conn.scalar(select(IngestSession.status).where(IngestSession.id == session_id))
        if status is None:
            raise JobNotFound(session_id)
        raise JobConflict(f"only an interrupted session can be resumed (it is {status})")


def spawn_reaper(engine: Engine, lease: float) -> gevent.Greenlet:
    """Reap expired leases now, then every fifth of ``lease`` (seconds), in a greenlet that logs and
    survives any error. A session whose process died is ``interrupted`` at most about 1.2 leases
    after its last commit."""
    reap_expired(engine)

    def reap_forever() -> None:
        while True:
            gevent.sleep(lease / 5)
            try:
                reap_expired(engine)
            except Exception:
                log.exception("reaping expired leases failed; retrying")

    return gevent.spawn(reap_forever)


def reap_expired(engine: Engine) -> int:
    """Mark running sessions whose lease expired (their process died or stalled) ``interrupted``,
    release the lease, and return how many.

    Each gets a ``progress`` event saying so, appended to its log and then published, so a client
    resuming with Last-Event-ID learns it too. Each session is taken by a conditional UPDATE, so
    reapers of several processes never both take one, and a lost owner's late writes are refused
    (they are fenced on ``lease_owner``).
    """
    now = time.time()
    expired = or_(IngestSession.lease_expires_at.is_(None), IngestSession.lease_expires_at < now)
    with engine.connect() as conn:
        candidates = conn.scalars(
            select(IngestSession.id).where(IngestSession.status.in_(RUNNING_STATUSES), expired)
        ).all()
    reaped: list[Event] = []
    for session_id in candidates:
        with engine.begin() as conn:
            taken = conn.execute(  # first, so the transaction holds the write lock from here on
                update(IngestSession)
                .where(IngestSession.id == session_id, IngestSession.status.in_(RUNNING_STATUSES), expired)
                .values(
                    status="interrupted",
                    lease_owner=None,
                    lease_expires_at=None,
                    last_event_id=IngestSession.last_event_id + 1,
                )
            ).rowcount
            if not taken:
                continue
            row = conn.execute(
                select(IngestSession.state, IngestSession.last_event_id).where(IngestSession.id == session_id)
            ).one()
            seq = row.last_event_id
            state = {**stopped_state(row.state, "interrupted"), "last_event_id": seq}
            progress = {k: v for k, v in state.items() if k not in ("session_id", "message", "parameters", "errors")}
            event = make_event(session_id, seq, "progress", progress)
            conn.execute(insert(EventRecord).values(session_id=session_id, seq=seq, type=event.type, data=event.data))
            conn.execute(update(IngestSession).where(IngestSession.id == session_id).values(state=state))
        log.warning("session %s: its lease expired; marked interrupted", session_id)
        reaped.append(event)
    for event in reaped:
        publish(event)
    return len(reaped)

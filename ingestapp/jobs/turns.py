"""Fair shares between users: each runs at most ``INGEST_MAX_ACTIVE_SESSIONS_PER_USER`` sessions at
once; the others wait for their turn.

A user's *active* sessions are those in ``ACTIVE_STATUSES`` that had their turn: queued for a worker
or just started, scanning, processing. A ``watching`` session idles until a file arrives and does not
count. A session started or resumed while its user has that many active, or while older sessions of
theirs wait (turns go oldest first), is ``queued`` with ``awaits_turn`` set and no lease owner
(``HELD``): it was never sent to the work tier, no process runs it, the reaper leaves it alone, and a
cancel ends it at once (``leases.cancel_queued``). Its state says ``awaits_turn: true`` (the page:
"waits for its turn").

When one of the user's active sessions ends (completed, failed, cancelled, interrupted) or starts
watching, ``next_turns`` gives the turns free to the user's oldest waiting sessions: each is leased
to the process that will run it, or left ``queued`` for the work tier, with a ``progress`` event
saying it waits no more. The registry calls it when a job ends and on every reaper tick, in serving
processes (``JobRegistry.serve``), so a turn freed by a crash, a restart or a watch is taken within
a fifth of the lease. Sessions with no user (from before accounts, or whose user was deleted) are
not limited; the CLI's run at once (``JobRegistry.start(here=True)``) and count.

Each decision is made under a lock on the user's row (``SELECT ... FOR UPDATE`` on PostgreSQL), so
processes starting or ending one user's sessions at once never let more than the limit run. SQLite
has one serving process, whose write transactions run one at a time (``store.db.begin``).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, and_, false, func, select, true, update

from ingestapp.core.vocabulary import ACTIVE_STATUSES, SessionStatus
from ingestapp.events.model import Event
from ingestapp.jobs.leases import UNOWNED, record_change
from ingestapp.store.models import IngestSession, User

#: A session queued for its turn: no owner, never sent to the work tier.
HELD = and_(UNOWNED, IngestSession.awaits_turn == true())


def user_of(conn: Connection, session_id: str) -> int | None:
    """The id of the user who started the session (None: no user, or no such session)."""
    return conn.scalar(select(IngestSession.user_id).where(IngestSession.id == session_id))


def active(conn: Connection, user_id: int) -> int:
    """How many sessions of ``user_id`` take a turn now (``ACTIVE_STATUSES``, not awaiting one)."""
    return conn.scalar(select(func.count()).where(
        IngestSession.user_id == user_id,
        IngestSession.status.in_(ACTIVE_STATUSES),
        IngestSession.awaits_turn == false(),
    )) or 0


def must_wait(conn: Connection, user_id: int | None, limit: int) -> bool:
    """Whether a session of ``user_id`` starting now waits for its turn: the user has ``limit``
    active sessions, or older ones waiting. Takes the user's lock for the rest of ``conn``'s
    transaction. Never for a session with no user (``user_id`` None)."""
    if user_id is None:
        return False
    _lock(conn, user_id)
    waiting = conn.scalar(select(IngestSession.id).where(IngestSession.user_id == user_id, HELD).limit(1))
    return waiting is not None or active(conn, user_id) >= limit


def hold(conn: Connection, session_id: str) -> Event:
    """Make a ``queued`` session that no process owns (one just taken by a resume) wait for its
    turn, in ``conn``'s transaction; the ``progress`` event saying so, to publish after the commit."""
    conn.execute(
        update(IngestSession)
        .where(IngestSession.id == session_id)
        .values(awaits_turn=True, last_event_id=IngestSession.last_event_id + 1)
    )
    return record_change(conn, session_id, lambda state: _queued(state, awaits_turn=True))


def next_turns(conn: Connection, user_id: int | None, limit: int, owner: str | None, lease: float) -> list[Event]:
    """Give the turns ``user_id`` has free (``limit`` minus its active sessions) to its oldest
    sessions waiting for one, in ``conn``'s transaction: each is leased to ``owner`` for ``lease``
    seconds, or with no ``owner`` left ``queued`` for the work tier (send it after the commit).

    Returns their ``progress`` events, oldest session first, to publish after the commit. With
    ``user_id`` None, every waiting session with no user goes (they are not limited).
    """
    waiting = select(IngestSession.id).where(IngestSession.user_id == user_id, HELD)
    if user_id is not None:
        _lock(conn, user_id)
        free = limit - active(conn, user_id)
        if free <= 0:
            return []
        waiting = waiting.limit(free)
    session_ids = conn.scalars(waiting.order_by(IngestSession.created_at, IngestSession.id)).all()
    released = (_release(conn, session_id, owner, lease) for session_id in session_ids)
    return [event for event in released if event is not None]


def users_waiting(engine: Engine) -> list[int | None]:
    """The users with sessions waiting for their turn (None: sessions with no user)."""
    with engine.connect() as conn:
        return list(conn.scalars(select(IngestSession.user_id).where(HELD).distinct()))


def _release(conn: Connection, session_id: str, owner: str | None, lease: float) -> Event | None:
    """End a session's wait for its turn (see ``next_turns``); None when it waits no more (a
    cancel, or another process, came first)."""
    taken = conn.execute(
        update(IngestSession)
        .where(IngestSession.id == session_id, HELD)
        .values(awaits_turn=False, lease_owner=owner, lease_expires_at=None if owner is None else time.time() + lease,
                last_event_id=IngestSession.last_event_id + 1)
    ).rowcount
    if not taken:
        return None
    return record_change(conn, session_id, lambda state: _queued(state, awaits_turn=False))


def _queued(state: dict[str, Any], awaits_turn: bool) -> dict[str, Any]:
    """A persisted state as of a ``queued`` session that does or does not wait for its turn."""
    return {**state, "status": SessionStatus.QUEUED, "awaits_turn": awaits_turn}


def _lock(conn: Connection, user_id: int) -> None:
    """Lock the user's row for the rest of ``conn``'s transaction (PostgreSQL; SQLite has no
    row locks, and needs none: see the module docstring)."""
    conn.execute(select(User.id).where(User.id == user_id).with_for_update())

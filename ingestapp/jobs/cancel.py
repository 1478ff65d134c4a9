"""How a cancel reaches a job: one interface, ``CancelChannel.send``, with three implementations,
and on the job's side one flag, ``CancelFlag``, that every channel ends up raising.

- ``LocalChannel``: the job runs in this process: its flag is raised at once.
- ``RowChannel``: the job runs in another process: the session row's ``cancel_requested``, which
  its owner reads at its next commit (within a fifth of the lease: ``jobs.writer``).
- ``RedisChannel``: with the work tier, the session's control stream (``work.remote``), heard at once
  by the job's results reader; it only speeds up the row's cancel, which stays the durable one.

``Canceller.send`` tries them in that order (``JobRegistry.cancel``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import Engine, update

from ingestapp.core.vocabulary import RUNNING_STATUSES
from ingestapp.store import db
from ingestapp.store.models import IngestSession
from ingestapp.work.remote import request_cancel


class CancelFlag:
    """A job's cancel request, whichever channel brought it: no new file starts once it is raised;
    files in flight get ``job.CANCEL_GRACE`` to finish."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        """Raise the flag (hub thread; idempotent)."""
        self.requested = True

    def __bool__(self) -> bool:
        return self.requested


class Cancellable(Protocol):
    """What a channel needs of a job running here (``jobs.job.Job``)."""

    cancel: CancelFlag

    def is_running(self) -> bool: ...


class CancelChannel(Protocol):
    """One way a cancel request travels to a job."""

    def send(self, session_id: str) -> bool:
        """Ask the session's job to stop; True when the request is on its way to a running job."""
        ...


class LocalChannel:
    """The jobs running in this process (``JobRegistry.jobs``)."""

    def __init__(self, jobs: Mapping[str, Cancellable]) -> None:
        self.jobs = jobs

    def send(self, session_id: str) -> bool:
        job = self.jobs.get(session_id)
        if job is None or not job.is_running():
            return False
        job.cancel.request()
        return True


class RowChannel:
    """The session row, for a job whose owner holds a live lease in any process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def send(self, session_id: str) -> bool:
        with db.begin(self.engine) as conn:
            return bool(conn.execute(
                update(IngestSession)
                .where(
                    IngestSession.id == session_id,
                    IngestSession.status.in_(RUNNING_STATUSES),
                    IngestSession.lease_expires_at >= time.time(),
                )
                .values(cancel_requested=True)
            ).rowcount)


class RedisChannel:
    """The work tier's control stream of the session (``work.remote.request_cancel``)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def send(self, session_id: str) -> bool:
        request_cancel(self.redis, session_id)
        return True


class Canceller:
    """The channels in order: this process's job, else the row, sped up by Redis when there is a work
    tier (``redis``). ``send`` is False when no running job got the request."""

    def __init__(self, jobs: Mapping[str, Cancellable], engine: Engine) -> None:
        self.local = LocalChannel(jobs)
        self.row = RowChannel(engine)
        self.redis: RedisChannel | None = None

    def use_redis(self, redis: Any) -> None:
        """Also send on the work tier's control stream (``redis``: its client)."""
        self.redis = RedisChannel(redis)

    def send(self, session_id: str) -> bool:
        """Ask the session's job to stop through the first channel that reaches it (``CancelChannel``)."""
        if self.local.send(session_id):
            return True
        if not self.row.send(session_id):
            return False
        if self.redis is not None:
            self.redis.send(session_id)
        return True

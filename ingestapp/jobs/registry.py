"""The jobs of one app: where a session's job runs, and starting, resuming, cancelling and looking
them up.

``JobRegistry`` (one per app) runs a session's ``Job`` (``job.py``) in this process, on its pool of
``INGEST_WORKERS`` stage processes (``work.pool``), or, with ``REDIS_URL`` and a live ``flask --app
ingestapp worker``, queues the session for the work tier (``work.tasks``): a worker takes it
(``take_queued``) and runs the same ``Job``, whose files go out as Celery tasks to every worker
(``work.remote.RemoteFiles``), ``INGEST_TASK_INFLIGHT`` at once, rather than to its own pool.

A session has one owner at a time, under a lease (``leases.py``: taking it, crash recovery); a
resume continues from what the session's items say (``recorded.py``); a cancel reaches the job
through ``cancel.Canceller``; the session queries read the database through ``sessions.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.threadpool import ThreadPool
from sqlalchemy import Engine

from ingestapp.core.errors import JobConflict, JobNotFound
from ingestapp.core.ids import new_id
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import SessionStatus
from ingestapp.events.log import publish_all
from ingestapp.jobs import leases, recorded, sessions, versions, watch
from ingestapp.jobs.cancel import Canceller
from ingestapp.jobs.job import Job
from ingestapp.store import db
from ingestapp.store.models import IngestSession
from ingestapp.work.pool import shared_pool
from ingestapp.work.remote import RESUMES_KEY, RemoteFiles, SendFiles, workers_alive

log = logging.getLogger(__name__)

#: Times a session whose process died is queued again by itself (with a live work tier).
AUTO_RESUMES = 3


class JobRegistry:
    """The jobs of one app: the stage-process pool (``workers`` processes: the files a job runs at
    once here), a threadpool for directory listings, and the running ``Job`` objects by session
    id; with ``use_work_tier``, the scale-out work tier."""

    def __init__(self, engine: Engine, config: dict[str, Any]) -> None:
        self.engine = engine
        self.media_roots: list[Path] = [Path(r).resolve() for r in config["MEDIA_ROOTS"]]
        self.thumbnail_dir: Path = config["THUMBNAIL_DIR"]
        self.workers: int = max(1, config["WORKERS"])
        self.file_delay: float = config["FILE_DELAY"]  # sent with each file: the stage process waits
        self.threadpool = ThreadPool(self.workers)  # directory listings only
        self.pool = shared_pool(self.workers, config["WORKER_NICE"], config["FILE_TIME_LIMIT"])
        self.lease: float = config["JOB_LEASE"]
        self.scan_queue: int = max(1, config["SCAN_QUEUE"])
        self.task_files: int = config["TASK_FILES"]
        self.task_inflight: int = max(1, config["TASK_INFLIGHT"])
        self.watch_settings = watch.Settings.from_config(config)
        self.keeps_watches = False  # restart_watches: this process serves, and restarts watches
        #: This registry's lease owner id: unique per process start (and per app in one process).
        self.owner = leases.new_owner()
        self.jobs: dict[str, Job] = {}
        self.canceller = Canceller(self.jobs, engine)
        self.reaper: gevent.Greenlet | None = None
        self.redis: Any = None  # the work tier's Redis client (use_work_tier)
        self.send_session: Callable[[str], None] | None = None
        self.send_files: SendFiles | None = None  # set in a worker: its jobs' files go to the work tier

    def use_work_tier(
        self, redis: Any, send_session: Callable[[str], None], send_files: SendFiles | None = None
    ) -> None:
        """Queue sessions for ``flask --app ingestapp worker`` processes (``send_session``) while one
        is alive; in a worker (``send_files`` given), send the files of the jobs it runs to all of them."""
        self.redis = redis
        self.send_session = send_session
        self.send_files = send_files
        self.canceller.use_redis(redis)

    # -- start and resume ---------------------------------------------------------------------------

    def start(self, parameters: IngestParameters, user_id: int | None = None, here: bool = False) -> str:
        """Create a session row (owned by ``user_id``) and return its id. Its job runs in this
        process (leased to this registry) unless a work tier is alive and ``here`` is false: then the
        session is queued for it, unleased, until a worker takes it (``take_queued``)."""
        session_id = new_id()
        job = Job(self, session_id, parameters)
        queue = not here and self._work_tier_alive()
        with db.begin(self.engine) as conn:
            conn.execute(IngestSession.__table__.insert().values(
                id=session_id,
                status=SessionStatus.QUEUED,
                parameters=parameters.to_dict(),
                state=job.committed_state,
                created_at=time.time(),
                lease_owner=None if queue else self.owner,
                lease_expires_at=None if queue else time.time() + self.lease,
                user_id=user_id,
            ))
        if queue:
            self.send_session(session_id)  # type: ignore[misc]
        else:
            self._spawn(job)
        return session_id

    def resume(self, session_id: str) -> None:
        """Continue an ``interrupted`` session with the files it has not finished.

        The lease is taken by one conditional UPDATE (``leases.take_interrupted``), so of racing
        resumes (from any process) exactly one succeeds. Raises JobNotFound, or JobConflict when the
        session is not interrupted (or another resume took it first). With a live work tier the
        session is queued for it, as a new one is.
        """
        queue = self._work_tier_alive()
        with db.begin(self.engine) as conn:
            leases.take_interrupted(conn, session_id, None if queue else self.owner, self.lease)
            job = None if queue else self._load(conn, session_id)
        if job is None:
            self.send_session(session_id)  # type: ignore[misc]
        else:
            self._spawn(job)

    def take_queued(self, session_id: str) -> Job | None:
        """Take a session queued for the work tier (new or resumed) and run its job here; None when
        it is not queued any more (another worker took it, or it was cancelled while queued)."""
        with db.begin(self.engine) as conn:
            if not leases.take_queued(conn, session_id, self.owner, self.lease):
                log.info("session %s: not queued any more; nothing to run", session_id)
                return None
            job = self._load(conn, session_id)
        return self._spawn(job)

    def requeue(self, session_id: str) -> None:
        """Queue an ``interrupted`` session for the work tier (its worker stopped or died), to be
        continued by whichever worker takes it. Raises as ``resume`` does."""
        with db.begin(self.engine) as conn:
            leases.take_interrupted(conn, session_id, None, self.lease)
        self.send_session(session_id)  # type: ignore[misc]

    def _load(self, conn: Any, session_id: str) -> Job:
        """The job of a session taken by this registry, going on from what earlier runs recorded."""
        earlier = recorded.read(conn, session_id)
        return Job(self, session_id, earlier.parameters, earlier)

    def _work_tier_alive(self) -> bool:
        if self.send_session is None:
            return False
        if workers_alive(self.redis):
            return True
        log.warning("no `flask --app ingestapp worker` is alive: the job runs in this web process")
        return False

    def _spawn(self, job: Job) -> Job:
        if self.send_files is not None:  # a worker: the job's files go to the whole work tier
            job.use_remote(RemoteFiles(self.redis, job.session_id, self.send_files, self.task_files, self.lease,
                                       job.is_duplicate, job.cancel.request), self.task_inflight)
        self.jobs[job.session_id] = job
        job.greenlet = gevent.spawn(job.run)
        return job

    # -- cancel -------------------------------------------------------------------------------------

    def cancel(self, session_id: str) -> None:
        """Ask a running job to stop, wherever it runs (``cancel.Canceller``); a session still
        waiting for the work tier is cancelled at once. Raises JobNotFound, or JobConflict when
        the session is not running."""
        if self.canceller.send(session_id):
            return
        with db.begin(self.engine) as conn:
            stopped = leases.cancel_queued(conn, session_id)
        if stopped is not None:
            publish_all([stopped])  # it was waiting for a worker: cancelled now, by this request
        elif self.exists(session_id):
            raise JobConflict("the session is not running")
        else:
            raise JobNotFound(session_id)

    # -- look up --------------------------------------------------------------------------------------

    def exists(self, session_id: str) -> bool:
        """Whether a session with that id exists."""
        return sessions.exists(self.engine, session_id)

    def state(self, session_id: str) -> dict[str, Any]:
        """The status JSON as last committed (a job running here keeps a copy, so the status API
        and the database never disagree, and its ``last_event_id`` is durable). Raises JobNotFound."""
        job = self.jobs.get(session_id)
        if job is not None:
            return job.committed_state
        return sessions.persisted_state(self.engine, session_id)

    def sessions(self, limit: int, user_id: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` sessions (of ``user_id`` only, if given), as ``sessions.listing``
        gives them; a job running here reports its last commit's state. Read off the hub."""

        def live_state(session_id: str) -> dict[str, Any] | None:
            job = self.jobs.get(session_id)
            return job.committed_state if job is not None else None

        return db.off_hub(sessions.listing, self.engine, limit, user_id, live_state)

    # -- crash recovery and shutdown ----------------------------------------------------------------

    def start_reaper(self) -> None:
        """Reap expired leases now, then every fifth of the lease (``leases.spawn_reaper``); while a
        work tier is alive, a reaped session is queued again for it (``_recover``)."""
        self.reaper = leases.spawn_reaper(self.engine, self.lease, self._recover)

    def restart_watches(self) -> None:
        """In a serving process (gunicorn worker, work-tier worker): resume the watching sessions
        stopped with their process now, and each one reaped later (no Resume click needed)."""
        self.keeps_watches = True
        for session_id in versions.interrupted_watches(self.engine):
            self._restart_watch(session_id)

    def _restart_watch(self, session_id: str) -> None:
        try:
            self.resume(session_id)
            log.warning("session %s: watching again after its process stopped", session_id)
        except JobConflict:
            pass  # restarted by another process meanwhile

    def _recover(self, session_id: str) -> None:
        """A session whose process died was reaped: a watch restarts at once (``restart_watches``);
        else, with a live work tier, queue it again, at most AUTO_RESUMES times (a session that
        kills its process every time stays interrupted)."""
        if self.keeps_watches and versions.is_watch(self.engine, session_id):
            self._restart_watch(session_id)
            return
        if self.send_session is None or not workers_alive(self.redis):
            return
        resumes_key = RESUMES_KEY.format(session_id=session_id)
        if self.redis.incr(resumes_key) > AUTO_RESUMES:
            log.warning("session %s: interrupted %d times; left for a person to resume", session_id, AUTO_RESUMES)
            return
        self.redis.expire(resumes_key, 86400)
        try:
            self.requeue(session_id)
            log.warning("session %s: queued again for the work tier", session_id)
        except JobConflict:
            pass  # resumed by someone else meanwhile

    def shutdown(self) -> None:
        """Stop the reaper, the running jobs (they become ``interrupted``) and the threadpool. The
        stage-process pool is the process's (``work.pool.shared_pool``); its processes exit with it."""
        if self.reaper is not None:
            self.reaper.kill()
        gevent.killall([job.greenlet for job in self.jobs.values() if job.greenlet], block=True, timeout=5)
        self.threadpool.kill()

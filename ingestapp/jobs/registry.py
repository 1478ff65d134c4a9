"""The jobs of one app: where a session's job runs, and starting, resuming, cancelling and looking
them up.

``JobRegistry`` (one per app) runs a session's ``Job`` (``job.py``) in this process, on its pool of
``INGEST_WORKERS`` stage processes (``work.pool``), or, with ``REDIS_URL`` and a live ``flask --app
ingestapp worker``, queues the session for the work tier (``work.tasks``): a worker takes it
(``take_queued``) and runs the same ``Job``, whose files go out as Celery tasks to every worker
(``work.remote.RemoteFiles``), ``INGEST_TASK_INFLIGHT`` at once, rather than to its own pool.

A session has one owner at a time, under a lease (``leases.py``: taking it, crash recovery); a
user runs at most ``INGEST_MAX_ACTIVE_SESSIONS_PER_USER`` sessions at once, the others wait for their
turn (``turns.py``); a resume continues from what the session's items say (``recorded.py``); a cancel
reaches the job through ``cancel.Canceller``; the session queries read the database through
``sessions.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent.threadpool import ThreadPool
from sqlalchemy import Connection, Engine

from ingestapp.core.errors import JobConflict, JobNotFound
from ingestapp.core.ids import new_id
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import SessionStatus
from ingestapp.events.log import publish_all
from ingestapp.events.model import Event
from ingestapp.jobs import leases, recorded, sessions, turns, versions, watch
from ingestapp.jobs.cancel import Canceller
from ingestapp.jobs.job import Job
from ingestapp.store import db
from ingestapp.store.models import IngestSession
from ingestapp.work.pool import shared_pool
from ingestapp.work.remote import RESUMES_KEY, RemoteFiles, SendFiles, workers_alive

log = logging.getLogger(__name__)

#: Times a session whose process died is queued again by itself (with a live work tier).
AUTO_RESUMES = 3


@dataclass
class Started:
    """What to do once a transaction that started sessions is committed (``JobRegistry._launch``):
    publish ``events`` (in order), run ``jobs`` here, send the sessions ``sent`` to the work tier."""

    events: list[Event] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)


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
        self.max_active: int = max(1, config["MAX_ACTIVE_SESSIONS_PER_USER"])  # per user (turns.py)
        #: ``serve``: this process serves: it restarts watches and gives waiting sessions their
        #: turns. A CLI command's app does neither: it would run others' jobs, then exit.
        self.serving = False
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
        session is queued for it, unleased, until a worker takes it (``take_queued``). Unless ``here``
        (the CLI: it runs at once, and counts), a user with INGEST_MAX_ACTIVE_SESSIONS_PER_USER active
        sessions, or older ones waiting, gets it ``queued`` for its turn (``turns.py``)."""
        session_id = new_id()
        job = Job(self, session_id, parameters)
        queue = not here and self._work_tier_alive()
        started = Started()
        with db.begin(self.engine) as conn:
            waits = not here and turns.must_wait(conn, user_id, self.max_active)
            owner = None if queue or waits else self.owner
            conn.execute(IngestSession.__table__.insert().values(
                id=session_id,
                status=SessionStatus.QUEUED,
                parameters=parameters.to_dict(),
                state={**job.committed_state, "awaits_turn": waits},
                created_at=time.time(),
                lease_owner=owner,
                lease_expires_at=None if owner is None else time.time() + self.lease,
                user_id=user_id,
                awaits_turn=waits,
            ))
            if waits:  # turns go oldest first: one may be free for an older session, or this one
                self._next_turns(conn, user_id, queue, started)
            elif queue:
                started.sent.append(session_id)
            else:
                started.jobs.append(job)
        self._launch(started)
        return session_id

    def resume(self, session_id: str) -> None:
        """Continue an ``interrupted`` session with the files it has not finished.

        The lease is taken by one conditional UPDATE (``leases.take_interrupted``), so of racing
        resumes (from any process) exactly one succeeds. Raises JobNotFound, or JobConflict when the
        session is not interrupted (or another resume took it first). With a live work tier the
        session is queued for it, and past its user's share it waits for its turn, as a new one does.
        """
        self._continue(session_id, self._work_tier_alive())

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
        continued by whichever worker takes it, in its turn. Raises as ``resume`` does."""
        self._continue(session_id, queue=True)

    def _continue(self, session_id: str, queue: bool) -> None:
        """Take an interrupted session (``leases.take_interrupted``): run it here, queue it for the
        work tier (``queue``), or, past its user's share, let it wait for its turn."""
        started = Started()
        with db.begin(self.engine) as conn:
            user_id = turns.user_of(conn, session_id)
            waits = turns.must_wait(conn, user_id, self.max_active)
            leases.take_interrupted(conn, session_id, None if queue or waits else self.owner, self.lease)
            if waits:
                started.events.append(turns.hold(conn, session_id))
                self._next_turns(conn, user_id, queue, started)
            elif queue:
                started.sent.append(session_id)
            else:
                started.jobs.append(self._load(conn, session_id))
        self._launch(started)

    # -- turns (turns.py) ---------------------------------------------------------------------------

    def _next_turns(self, conn: Connection, user_id: int | None, queue: bool, started: Started) -> None:
        """Give ``user_id``'s free turns to its oldest waiting sessions, in ``conn``'s transaction:
        leased to this registry, or for the work tier (``queue``); ``started`` says what to do next."""
        owner = None if queue else self.owner
        for event in turns.next_turns(conn, user_id, self.max_active, owner, self.lease):
            started.events.append(event)
            if queue:
                started.sent.append(event.session_id)
            else:
                started.jobs.append(self._load(conn, event.session_id))

    def _launch(self, started: Started) -> None:
        """Once committed: publish the events, then run the jobs here and send the rest to the work tier."""
        publish_all(started.events)
        for job in started.jobs:
            self._spawn(job)
        for session_id in started.sent:
            self.send_session(session_id)  # type: ignore[misc]

    def _give_turns(self, user_id: int | None) -> None:
        """Give ``user_id``'s free turns to its oldest waiting sessions, to run here or in the work tier."""
        queue = self._work_tier_alive()
        started = Started()
        with db.begin(self.engine) as conn:
            self._next_turns(conn, user_id, queue, started)
        self._launch(started)

    def _turn_over(self, session_id: str) -> None:
        """A session of this process stopped taking a turn (its job ended, or it was cancelled while
        queued): in a serving process, its user's next session takes it. Logs any error: the next
        reaper pass tries again (``_turns_due``)."""
        if not self.serving:
            return
        try:
            with self.engine.connect() as conn:
                user_id = turns.user_of(conn, session_id)
            self._give_turns(user_id)
        except Exception:
            log.exception("session %s: giving its turn to the next session failed; the reaper will", session_id)

    def _turns_due(self) -> None:
        """Every reaper pass, in a serving process: give the turns freed anywhere (a crash, a
        restart, a session that started watching) to the sessions waiting for them."""
        if self.serving:
            for user_id in turns.users_waiting(self.engine):
                self._give_turns(user_id)

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
        job.greenlet.link(lambda _: self._turn_over(job.session_id))  # in a greenlet of its own
        return job

    # -- cancel -------------------------------------------------------------------------------------

    def cancel(self, session_id: str) -> None:
        """Ask a running job to stop, wherever it runs (``cancel.Canceller``); a session still
        waiting for the work tier or for its turn is cancelled at once. Raises JobNotFound, or
        JobConflict when the session is not running."""
        if self.canceller.send(session_id):
            return
        with db.begin(self.engine) as conn:
            stopped = leases.cancel_queued(conn, session_id)
        if stopped is not None:
            publish_all([stopped])  # it was waiting: cancelled now, by this request
            self._turn_over(session_id)  # one waiting for a worker had its user's turn
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
        work tier is alive, a reaped session is queued again for it (``_recover``); in a serving
        process, each pass gives the turns free to the sessions waiting for them (``_turns_due``)."""
        self.reaper = leases.spawn_reaper(self.engine, self.lease, self._recover, self._turns_due)

    def serve(self) -> None:
        """In a serving process (gunicorn worker, work-tier worker): resume the watching sessions
        stopped with their process now, and each one reaped later (no Resume click needed); give
        waiting sessions their turns now, whenever a job of this process ends, and every reaper pass."""
        self.serving = True
        for session_id in versions.interrupted_watches(self.engine):
            self._restart_watch(session_id)
        self._turns_due()

    def _restart_watch(self, session_id: str) -> None:
        try:
            self.resume(session_id)
            log.warning("session %s: watching again after its process stopped", session_id)
        except JobConflict:
            pass  # restarted by another process meanwhile

    def _recover(self, session_id: str) -> None:
        """A session whose process died was reaped: a watch restarts at once (``serve``); else, with
        a live work tier, queue it again, at most AUTO_RESUMES times (a session that kills its
        process every time stays interrupted)."""
        if self.serving and versions.is_watch(self.engine, session_id):
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
        stage-process pool is the process's (``work.pool.shared_pool``); its processes exit with it.
        The turns the stopped jobs free go to other processes (their reaper passes)."""
        self.serving = False  # a stopping process starts no job
        if self.reaper is not None:
            self.reaper.kill()
        gevent.killall([job.greenlet for job in self.jobs.values() if job.greenlet], block=True, timeout=5)
        self.threadpool.kill()

"""Ingest jobs: one greenlet per session, per-file stage work in worker processes.

``JobRegistry`` (one per app) starts, resumes, cancels and looks up jobs. ``Job.run`` scans the
directory (listings in gevent's threadpool: it is I/O) into a bounded queue while ``INGEST_WORKERS``
worker greenlets take files from it and hand each to a worker process (``workpool.py``), which runs
all of the file's stages; the hub only does bookkeeping. Every state change becomes an event
(``events.py``), buffered for the database (``eventlog.py``); a writer greenlet commits what is
pending as soon as its previous commit is done (group commit) and only then publishes those events.

With ``REDIS_URL`` and a live ``flask --app ingestapp worker``, a session is queued for the work
tier instead (``tasks.py``): a worker takes it (``take_queued``) and runs the same ``Job``, whose
files go out as Celery tasks to every worker (``remote.RemoteFiles``) rather than to its own pool.

A session has one owner at a time, under a lease (``leases.py``: taking it, crash recovery); the
job's state JSON is built by ``progress.JobState``, its ``progress`` events are throttled by
``throttle.py``, and the registry's session queries read the database through ``sessions.py``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.queue
from gevent.threadpool import ThreadPool
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError

from ingestapp import stages
from ingestapp.core import metrics
from ingestapp.core.errors import JobConflict, JobNotFound
from ingestapp.core.ids import new_id
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.paths import display_path, root_of
from ingestapp.core.vocabulary import RUNNING_STATUSES, TERMINAL_EVENT_OF
from ingestapp.events.log import LeaseLost, SessionLog
from ingestapp.events.model import make_event, publish
from ingestapp.jobs import leases, sessions
from ingestapp.jobs.pairs import Pairs
from ingestapp.jobs.scanner import ScannedFile, list_directory, scan
from ingestapp.jobs.state import ERRORS_KEPT, STATS_KEYS, JobState, StageProgress
from ingestapp.jobs.throttle import ProgressThrottle
from ingestapp.stages.base import new_item_fields
from ingestapp.store.models import CatalogEntry, ErrorEntry, IngestSession, Item
from ingestapp.work.pool import FileAbandoned, FileTask, WorkerDied, shared_pool
from ingestapp.work.remote import RemoteFiles, SendFiles, request_cancel, workers_alive

log = logging.getLogger(__name__)

#: Seconds a cancelled job still waits for a file in a worker process before abandoning it (the
#: process is killed): cancel takes effect within about this, however long a file takes.
CANCEL_GRACE = 1.0
#: Times a session whose process died is queued again by itself (with a live work tier).
AUTO_RESUMES = 3
FINAL_WRITE_ATTEMPTS = 3  # a job's last commit is retried (1 s apart) before the reaper is left to it


class JobRegistry:
    """The jobs of one app: the work pool, a threadpool for directory listings, and the running
    ``Job`` objects by session id; with ``use_work_tier``, the scale-out work tier."""

    def __init__(self, engine: Engine, config: dict[str, Any]) -> None:
        self.engine = engine
        self.media_roots: list[Path] = [Path(r).resolve() for r in config["MEDIA_ROOTS"]]
        self.thumbnail_dir: Path = config["THUMBNAIL_DIR"]
        self.workers: int = max(1, config["WORKERS"])
        self.file_delay: float = config["FILE_DELAY"]
        self.threadpool = ThreadPool(self.workers)  # directory listings only
        self.pool = shared_pool(self.workers, config["WORKER_NICE"], config["FILE_TIME_LIMIT"])
        self.lease: float = config["JOB_LEASE"]
        self.scan_queue: int = max(1, config["SCAN_QUEUE"])
        self.task_files: int = config["TASK_FILES"]
        self.task_inflight: int = max(1, config["TASK_INFLIGHT"])
        #: This registry's lease owner id: unique per process start (and per app in one process).
        self.owner = leases.new_owner()
        self.jobs: dict[str, Job] = {}
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

    def start(self, parameters: IngestParameters, user_id: int | None = None, here: bool = False) -> str:
        """Create a session row (owned by ``user_id``) and return its id. Its job runs in this
        process (leased to this registry) unless a work tier is alive and ``here`` is false: then the
        session is queued for it, unleased, until a worker takes it (``take_queued``)."""
        session_id = new_id()
        job = Job(self, session_id, parameters)
        queue = not here and self._work_tier_alive()
        with self.engine.begin() as conn:
            conn.execute(
                IngestSession.__table__.insert().values(
                    id=session_id,
                    status="queued",
                    parameters=parameters.to_dict(),
                    state=job.committed_state,
                    created_at=time.time(),
                    lease_owner=None if queue else self.owner,
                    lease_expires_at=None if queue else time.time() + self.lease,
                    user_id=user_id,
                )
            )
        if queue:
            self.send_session(session_id)  # type: ignore[misc]
        else:
            self._spawn(job)
        return session_id

    def take_queued(self, session_id: str) -> Job | None:
        """Take a session queued for the work tier (new or resumed) and run its job here; None when
        it is not queued any more (another worker took it, or it was cancelled while queued)."""
        with self.engine.begin() as conn:
            if not leases.take_queued(conn, session_id, self.owner, self.lease):
                log.info("session %s: not queued any more; nothing to run", session_id)
                return None
            job = self._load(conn, session_id)
        return self._spawn(job)

    def _work_tier_alive(self) -> bool:
        if self.send_session is None:
            return False
        if workers_alive(self.redis):
            return True
        log.warning("no `flask --app ingestapp worker` is alive: the job runs in this web process")
        return False

    def resume(self, session_id: str) -> None:
        """Continue an ``interrupted`` session with the files it has not finished.

        The lease is taken by one conditional UPDATE (``leases.take_interrupted``), so of racing
        resumes (from any process) exactly one succeeds. Raises JobNotFound, or JobConflict when the
        session is not interrupted (or another resume took it first). With a live work tier the
        session is queued for it, as a new one is.
        """
        queue = self._work_tier_alive()
        with self.engine.begin() as conn:
            leases.take_interrupted(conn, session_id, None if queue else self.owner, self.lease)
            job = None if queue else self._load(conn, session_id)
        if job is None:
            self.send_session(session_id)  # type: ignore[misc]
        else:
            self._spawn(job)

    def requeue(self, session_id: str) -> None:
        """Queue an ``interrupted`` session for the work tier (its worker stopped or died), to be
        continued by whichever worker takes it. Raises as ``resume`` does."""
        with self.engine.begin() as conn:
            leases.take_interrupted(conn, session_id, None, self.lease)
        self.send_session(session_id)  # type: ignore[misc]

    def _load(self, conn: Any, session_id: str) -> Job:
        """The job of a session taken by this registry, with what earlier runs recorded."""
        session = conn.execute(
            select(IngestSession.parameters, IngestSession.state, IngestSession.last_event_id).where(
                IngestSession.id == session_id
            )
        ).one()
        done = conn.execute(
            select(Item.root, Item.path_bytes, Item.sha256).where(Item.session_id == session_id)
        ).all()
        job = Job(self, session_id, IngestParameters(**session.parameters), session.state, session.last_event_id)
        job.done_paths = {path for _, path, _ in done}
        job.seen_hashes = {sha: Path(root) / os.fsdecode(path) for root, path, sha in done if sha}
        return job

    def cancel(self, session_id: str) -> None:
        """Ask a running job to stop, wherever it runs: here at once, in another process through
        the row's ``cancel_requested``, which its owner reads at its next commit (within a fifth
        of the lease). Raises JobNotFound, or JobConflict when the session is not running.
        """
        job = self.jobs.get(session_id)
        if job is not None and job.status in RUNNING_STATUSES:
            job.cancel_requested = True
            return
        with self.engine.begin() as conn:
            requested = conn.execute(
                update(IngestSession)
                .where(
                    IngestSession.id == session_id,
                    IngestSession.status.in_(RUNNING_STATUSES),
                    IngestSession.lease_expires_at >= time.time(),
                )
                .values(cancel_requested=True)
            ).rowcount
            stopped = None if requested else leases.cancel_queued(conn, session_id)
        if stopped is not None:
            publish(stopped)  # it was waiting for a worker: cancelled now, by this request
        elif not requested:
            raise JobConflict("the session is not running") if self.exists(session_id) else JobNotFound(session_id)
        elif self.redis is not None:
            request_cancel(self.redis, session_id)  # heard at once by its job in a worker

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
        gives them; a job running here reports its last commit's state."""

        def live_state(session_id: str) -> dict[str, Any] | None:
            job = self.jobs.get(session_id)
            return job.committed_state if job is not None else None

        return sessions.listing(self.engine, limit, user_id, live_state)

    def start_reaper(self) -> None:
        """Reap expired leases now, then every fifth of the lease (``leases.spawn_reaper``); while a
        work tier is alive, a reaped session is queued again for it (``_recover``)."""
        self.reaper = leases.spawn_reaper(self.engine, self.lease, self._recover)

    def _recover(self, session_id: str) -> None:
        """A session whose process died was reaped: with a live work tier, queue it again, at most
        AUTO_RESUMES times (a session that kills its process every time stays interrupted)."""
        if self.send_session is None or not workers_alive(self.redis):
            return
        resumes_key = f"ingestapp:resumes:{session_id}"
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
        work pool is the process's (``workpool.shared_pool``); its processes exit with it."""
        if self.reaper is not None:
            self.reaper.kill()
        gevent.killall([job.greenlet for job in self.jobs.values() if job.greenlet], block=True, timeout=5)
        self.threadpool.kill()

    def _spawn(self, job: Job) -> Job:
        if self.send_files is not None:  # a worker: the job's files go to the whole work tier
            job.remote = RemoteFiles(self.redis, job.session_id, self.send_files, self.task_files, self.lease,
                                     job.is_duplicate, job.request_cancel)
            job.concurrency = self.task_inflight
        self.jobs[job.session_id] = job
        job.greenlet = gevent.spawn(job.run)
        return job


class Job(JobState):
    """One session's run: counters (their state JSON: ``JobState``), the event sequence, and the
    greenlet doing the work."""

    def __init__(
        self,
        registry: JobRegistry,
        session_id: str,
        parameters: IngestParameters,
        saved_state: dict[str, Any] | None = None,
        last_event_id: int = 0,
    ) -> None:
        self.registry = registry
        self.session_id = session_id
        self.parameters = parameters
        self.stage_modules = stages.enabled_stages(parameters)
        self.log = SessionLog(registry.engine, session_id, registry.owner, registry.lease)
        self.greenlet: gevent.Greenlet | None = None
        self.seq = last_event_id
        self.status = "queued"
        self.failure: str | None = None  # why the job failed, for the state
        self.cancel_requested = False
        self.total_files = 0
        self.current_file: str | None = None
        self.done_paths: set[bytes] = set()  # path_bytes of the items already stored
        #: Content hashes met by this session: SHA-256 → the file that has it (a duplicate is
        #: another file with the same hash; asking again for the same file gives the same answer).
        self.seen_hashes: dict[str, Path] = {}
        self.pairs = Pairs()  # item ids given at scan time: each item of a RAW+JPEG pair names the other
        self.catalog_hashes: set[str] = set()  # read at the start of a run that skips duplicates
        #: Where the files go: this process's work pool, or the work tier (set by the registry).
        self.remote: RemoteFiles | None = None
        self.concurrency = registry.workers  # files processed at once
        self.active = 0  # workers holding a file, from taking it off the queue until it is recorded
        self.queued = 0  # files waiting in ``queue`` (the queue also holds one end marker per worker)
        # Bounded: the scan waits while the workers are this far behind (backpressure).
        self.queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=registry.scan_queue)
        self.started_at: float | None = None
        self.run_started = time.monotonic()
        self.run_ended: float | None = None
        self.run_done = 0
        self.stats = dict.fromkeys(STATS_KEYS, 0)
        self.errors: deque[dict[str, Any]] = deque(maxlen=ERRORS_KEPT)
        self.stages = {"scanning": StageProgress()} | {s.NAME: StageProgress() for s in self.stage_modules}
        self._elapsed_before_ms = 0.0
        self._progress_throttle = ProgressThrottle(
            lambda: self.emit("progress", **self.progress()), lambda: self.status in RUNNING_STATUSES
        )
        self._pending = gevent.event.Event()  # set by emit: the writer has something to commit
        self._stopping = False  # the writer's last loop; run() makes the final commit itself
        self._lease_lost = False
        if saved_state:
            self._restore(saved_state)
        #: The state as of the last commit: what the status API shows, and what the database holds.
        self.committed_state = self.state()

    # -- events and persistence -----------------------------------------------------------------

    def emit(self, event_type: str, **fields: Any) -> None:
        """Stamp and record an event (hub thread only); the writer publishes it once it is
        committed, so an id a client sees is never handed to another event, even after a crash,
        and a client that sees ``complete`` can fetch every item at once.
        """
        self.seq += 1
        self.log.add_event(make_event(self.session_id, self.seq, event_type, fields))
        self._pending.set()

    def emit_progress(self) -> None:
        """Emit ``progress`` now, or once PROGRESS_INTERVAL has passed since the last one (``throttle.py``)."""
        self._progress_throttle.request()

    def commit(self, release: bool = False) -> None:
        """Write the buffered rows with the current state (renewing the lease, or releasing it),
        then publish the events written. Raises LeaseLost or the database's error."""
        state = self.state()
        events, cancel = self.log.commit(state, release)
        self.committed_state = state
        self.cancel_requested = self.cancel_requested or cancel
        for event in events:
            publish(event)
        if self.remote is not None and not release:
            self.remote.renew()  # the run stays open for the workers while the lease is held

    def request_cancel(self) -> None:
        """Stop the run: no new file starts; files in flight get CANCEL_GRACE to finish."""
        self.cancel_requested = True

    def is_duplicate(self, sha256: str, path: Path) -> bool:
        """Whether the file at ``path`` (absolute) with content ``sha256`` is a duplicate: the hash is
        in the catalog, or another file of this session has it. The same file always gets the same
        answer, so a file run again (its worker died) is not its own duplicate."""
        return sha256 in self.catalog_hashes or self.seen_hashes.setdefault(sha256, path) != path

    def _write_continuously(self) -> None:
        """The writer greenlet: commit what is pending as soon as the previous commit is done
        (group commit: events emitted meanwhile share the next one), or every fifth of the lease
        when idle, to renew it and read a cancel request. Raises what ``commit`` raises.

        Only this greenlet commits while the job runs (``run`` makes the final commit after it
        ended), so commits never overlap even where the database yields to the hub during I/O
        (PostgreSQL under gevent), and events reach the bus in ``seq`` order, each after its commit
        (a Redis bus reader takes a hole in ``seq`` for a gap)."""
        heartbeat = self.registry.lease / 5
        while True:
            self._pending.wait(heartbeat)
            self._pending.clear()
            if self._stopping:
                return
            self.commit()

    def _final_commit(self) -> None:
        """The last write: everything left and the final state, releasing the lease; retried."""
        for attempt in range(FINAL_WRITE_ATTEMPTS):
            try:
                self.commit(release=True)
                return
            except LeaseLost:
                return
            except Exception:
                log.exception("session %s: final write failed (attempt %d)", self.session_id, attempt + 1)
                gevent.sleep(1)

    def _set_stage(self, name: str, change: str) -> None:
        stage = self.stages[name]
        if getattr(stage, change)():
            self.emit("stage", stage=name, **self.stage_dict(name))

    def _record_error(self, file: str, stage: str, message: str) -> dict[str, Any]:
        entry = {"file": file, "stage": stage, "message": message, "time": time.time()}
        self.errors.append(entry)
        self.stats["errors"] += 1
        self.log.add_error(entry)
        self.emit("error", **entry)
        return entry

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        """The job greenlet: scan, process, finish; always leaves a terminal status persisted
        (or, when even that write fails, an unrenewed lease that the reaper turns into
        ``interrupted``). A failing write, worker or the writer itself fails the job at once."""
        self.started_at = self.started_at or time.time()
        self.run_started = time.monotonic()
        writer = self._spawn_linked(self._write_continuously)
        workers: list[gevent.Greenlet] = []
        try:
            self.status = "scanning"
            self._set_stage("scanning", "start")
            self.emit_progress()
            self.catalog_hashes = self._catalog_hashes() if self.parameters.skip_duplicates else set()
            if self.remote is not None:
                self.remote.start()
            workers = [self._spawn_linked(self._work) for _ in range(self.concurrency)]
            self._scan()
            gevent.joinall(workers, raise_error=True)
            self._finish("cancelled" if self.cancel_requested else "completed")
        except gevent.GreenletExit:
            self._finish("interrupted")
        except LeaseLost:
            self._lease_lost = True  # reaped: the session is another's now; write nothing more
            log.warning("session %s: lease lost; stopping without writing", self.session_id)
        except Exception as exc:
            log.exception("session %s failed", self.session_id)
            self._finish("failed", message=_failure_message(exc))
        finally:
            gevent.killall(workers)
            if self.remote is not None:
                self.remote.stop()
            self._stopping = True
            self._pending.set()
            writer.join()
            if not self._lease_lost:
                self._final_commit()
            if self.registry.jobs.get(self.session_id) is self:
                del self.registry.jobs[self.session_id]

    def _spawn_linked(self, function: Any, *args: Any) -> gevent.Greenlet:
        """A helper greenlet whose exception is raised in the job greenlet (none dies silently;
        the job logs it once)."""
        job = gevent.getcurrent()

        def helper() -> None:
            try:
                function(*args)
            except Exception as exc:
                job.kill(exc, block=False)

        return gevent.spawn(helper)

    def _catalog_hashes(self) -> set[str]:
        with self.registry.engine.connect() as conn:
            return set(conn.scalars(select(CatalogEntry.sha256)))

    def _scan(self) -> None:
        directory = Path(self.parameters.directory)
        root = root_of(directory, self.registry.media_roots)
        prefix = directory.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        scanning = self.stages["scanning"]
        reported = self._scanning_errors_reported()

        def on_error(relpath: str, message: str) -> None:
            file = display_path((prefix + relpath).rstrip("/") or ".")
            if file not in reported:  # a resumed scan meets the same bad links again
                self._record_error(file, "scanning", message)

        roots = self.registry.media_roots
        found = scan(
            directory,
            self.parameters.patterns,
            listdir=lambda d: self.registry.threadpool.apply(list_directory, (d, roots)),
            on_error=on_error,
        )
        for file in _top_level_errors_named(self.pairs.scan(found, prefix), prefix):
            if self.cancel_requested or self.total_files == self.parameters.max_files:
                break
            self.total_files += 1
            scanning.processed += 1
            if os.fsencode(prefix + file.relpath) not in self.done_paths:
                self.queued += 1
                self.queue.put((file, root, prefix + file.relpath))  # waits while the queue is full
            self.emit_progress()
        # Not in a ``finally``: when the scan fails, run() kills the workers instead.
        for _ in range(self.concurrency):
            self.queue.put(None)
        self._set_stage("scanning", "finish")
        self.emit_progress()

    def _scanning_errors_reported(self) -> set[str]:
        """Files an earlier run of this session already reported from the scan (empty when new)."""
        with self.registry.engine.connect() as conn:
            return set(conn.scalars(
                select(ErrorEntry.file).where(ErrorEntry.session_id == self.session_id, ErrorEntry.stage == "scanning")
            ))

    def _work(self) -> None:
        # No timeout needed: _scan queues one None per worker, or run() kills the workers.
        while (task := self.queue.get()) is not None:
            self.queued -= 1
            if not self.cancel_requested:
                self.active += 1
                try:
                    self._process(*task)
                finally:
                    self.active -= 1

    def _process(self, file: ScannedFile, root: Path, relpath: str) -> None:
        """Run the stages on one file in a worker process (of this process's pool, or of the work
        tier), counting each stage's outcome as it is reported. ``relpath`` (relative to ``root``,
        exact bytes in ``os.fsdecode`` form) is stored as ``path_bytes``; people see its display form."""
        if self.registry.file_delay and self.remote is None:  # work-tier workers wait themselves
            gevent.sleep(self.registry.file_delay)
        self.status = "processing"
        shown = self.current_file = display_path(relpath)
        names = [module.NAME for module in self.stage_modules]
        task = FileTask(
            root / relpath, shown, self.parameters, self.registry.thumbnail_dir, file.real, file.identity,
            tuple(self.registry.media_roots), tuple(module.__name__ for module in self.stage_modules),
            check_duplicates=self.parameters.skip_duplicates,
        )
        errors: list[dict[str, str]] = []
        reported: list[str] = []  # the stages whose outcome the worker sent, in order
        status = "ok"

        def on_stage(name: str, message: str | None, seconds: float) -> None:
            nonlocal status
            reported.append(name)
            self._stage_outcome(name, shown, message, errors, seconds)
            if message is not None:
                status = "error"
            elif len(reported) < len(names):
                self._enter_stage(names[len(reported)])

        def is_duplicate(sha256: str) -> bool:
            nonlocal status
            if not self.is_duplicate(sha256, task.path):
                return False
            status = "skipped"
            if len(reported) < len(names):
                self.stages[names[len(reported)]].in_flight -= 1  # entered, but it will not run
            return True

        cancel_seen: list[float] = []

        def abandon() -> bool:
            if not self.cancel_requested:
                return False
            cancel_seen[:] = cancel_seen or [time.monotonic()]
            return time.monotonic() - cancel_seen[0] > CANCEL_GRACE

        self._enter_stage(names[0])
        worker: str | None = None
        try:
            result = (self.remote or self.registry.pool).run_file(task, on_stage, is_duplicate, abandon)
            item, worker = result.item, result.worker
        except WorkerDied as exc:
            item, worker = new_item_fields(), exc.worker
            if status == "ok" and len(reported) < len(names):
                on_stage(names[len(reported)], str(exc), 0.0)  # the stage it died in
            else:  # after its last stage (or a duplicate's answer), before the result: rare
                status = "error"
                errors.append({"stage": names[-1], "message": str(exc)})
                self._record_error(shown, names[-1], str(exc))
        except BaseException as exc:
            if status == "ok" and len(reported) < len(names):
                self.stages[names[len(reported)]].in_flight -= 1  # abandoned: cancelled, or the job was killed
            if isinstance(exc, FileAbandoned):
                return  # not done: like a file still queued at the cancel
            raise
        for name in names[len(reported):]:
            self.stages[name].processed += 1  # not run for this file, but accounted for
            self.stages[name].skipped += 1
        self._complete_file(item, worker, shown, root, relpath, status, errors)

    def _enter_stage(self, name: str) -> None:
        """A file enters stage ``name`` (in a worker process)."""
        stage = self.stages[name]
        if stage.start():
            self.emit("stage", stage=name, **self.stage_dict(name))
        stage.in_flight += 1

    def _stage_outcome(
        self, name: str, file: str, message: str | None, errors: list[dict[str, str]], seconds: float
    ) -> None:
        """Stage ``name`` ran on ``file`` for ``seconds`` (measured in the worker process): ok
        (``message`` None) or failed with ``message``."""
        stage = self.stages[name]
        stage.in_flight -= 1
        stage.processed += 1
        metrics.STAGE_SECONDS.labels(name).observe(seconds)
        metrics.FILES.labels(name, "ok" if message is None else "error").inc()
        if message is not None:
            stage.errors += 1
            errors.append({"stage": name, "message": message})
            self._record_error(file, name, message)
        if stage.processed == self.total_files and self.stages["scanning"].status == "completed":
            self._set_stage(name, "finish")

    def _complete_file(
        self, item: dict[str, Any], worker: str | None, shown: str, root: Path, relpath: str, status: str,
        errors: list[dict[str, str]],
    ) -> None:
        self._count(status, item)
        item_id, pair_id = self.pairs.take(relpath)
        self.log.add_item(
            {
                "id": item_id,
                "seq": self.done_files,
                "root": str(root),
                "path": shown,
                "path_bytes": os.fsencode(relpath),
                "status": status,
                "sha256": item["sha256"],
                "fields": item,
                "errors": errors,
                "worker": worker,
                "pair_id": pair_id,
            }
        )
        self.emit("file", item_id=item_id, path=shown, status=status, error=errors[0] if errors else None)
        self.emit_progress()

    def _count(self, status: str, item: dict[str, Any]) -> None:
        self.run_done += 1
        if status == "skipped":
            self.stats["skipped_duplicates"] += 1
            return
        self.stats["processed_files"] += 1
        if status != "ok":
            return
        names = {m.NAME for m in self.stage_modules}
        self.stats["metadata_extracted"] += "metadata" in names
        self.stats["keywords_added"] += len(item["keywords"])
        self.stats["scores_imported"] += item["rating"] is not None or item["score"] is not None
        self.stats["nsfw_detected"] += bool(item["nsfw"])

    def _finish(self, status: str, message: str | None = None) -> None:
        self._progress_throttle.cancel()  # the terminal event carries the final progress
        for stage in self.stages.values():
            if status == "completed":
                stage.finish()
            else:
                stage.stop(status)
        self.run_ended = time.monotonic()
        self.status = status
        self.failure = message
        self.current_file = None
        event_type = TERMINAL_EVENT_OF.get(status)
        if event_type is None:  # interrupted: not terminal, the session can be resumed
            self.emit("progress", **self.progress())
        else:
            self.emit(event_type, message=message, **self.progress())


def _top_level_errors_named(found: Iterator[ScannedFile], prefix: str) -> Iterator[ScannedFile]:
    """``found``, with an OSError from listing the chosen directory itself reworded to name it
    relative to its media root (the OSError's own file name is an absolute server path)."""
    try:
        yield from found
    except OSError as exc:
        name = display_path(prefix.rstrip("/") or ".")
        raise OSError(exc.errno, f"cannot list the directory {name}: {exc.strerror}") from None


def _failure_message(exc: BaseException) -> str:
    """The ``message`` of a failed session: a database error names its driver's message only
    (never the SQL statement or its parameters, which hold file paths)."""
    if isinstance(exc, DBAPIError):
        return f"database write failed: {_first_line(exc.orig)}"
    return f"{type(exc).__name__}: {exc}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__

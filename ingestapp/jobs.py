"""Ingest jobs: one greenlet per session, per-file stage work in a gevent threadpool.

``JobRegistry`` (one per app) starts, resumes, cancels and looks up jobs. ``Job.run`` scans the
directory into a queue while ``INGEST_WORKERS`` worker greenlets take files from it and run each
stage in the threadpool, so the hub only does bookkeeping. Every state change is published as an
event (``events.py``) and buffered for the database (``eventlog.py``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
import gevent.queue
from gevent.threadpool import ThreadPool
from sqlalchemy import Engine, insert, select, update

from . import stages
from .eventlog import MAX_PENDING, SessionLog
from .events import make_event, publish
from .models import CatalogEntry, EventRecord, IngestSession, Item
from .parameters import IngestParameters
from .paths import root_of
from .progress import STATS_KEYS, StageProgress, percent
from .scanner import list_directory, scan
from .stages.base import FileContext

log = logging.getLogger(__name__)

RUNNING_STATUSES = ("queued", "scanning", "processing")
FLUSH_INTERVAL = 0.25  # seconds between batch writes of a running job
#: Seconds between ``progress`` events: 20 per second at most, however fast files go by (a
#: ``file`` event still goes out for every file). Each progress event costs every watching stream
#: a send; browsers repaint at most once a frame anyway.
PROGRESS_INTERVAL = 0.05
ERRORS_KEPT = 50  # errors carried in the state; all are in the errors table
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def new_id() -> str:
    """An unguessable id: 128 random bits, URL-safe base64 (22 characters)."""
    return secrets.token_urlsafe(16)


class JobNotFound(LookupError):
    """No session with that id."""


class JobConflict(RuntimeError):
    """The session is not in a state that allows the request (e.g. resuming a running job)."""


class JobRegistry:
    """The jobs of one app: a shared threadpool and the running ``Job`` objects by session id."""

    def __init__(self, engine: Engine, config: dict[str, Any]) -> None:
        self.engine = engine
        self.media_roots: list[Path] = [Path(r).resolve() for r in config["MEDIA_ROOTS"]]
        self.thumbnail_dir = Path(config["INSTANCE_PATH"]) / "thumbnails"
        self.workers: int = max(1, config["WORKERS"])
        self.file_delay: float = config["FILE_DELAY"]
        self.threadpool = ThreadPool(self.workers)
        self.jobs: dict[str, Job] = {}
        self._model_lock = gevent.lock.Semaphore()

    def start(self, parameters: IngestParameters, user_id: int | None = None) -> Job:
        """Create a session row (owned by ``user_id``) and spawn its job greenlet."""
        session_id = new_id()
        job = Job(self, session_id, parameters)
        with self.engine.begin() as conn:
            conn.execute(
                IngestSession.__table__.insert().values(
                    id=session_id,
                    status="queued",
                    parameters=parameters.to_dict(),
                    state=job.state(),
                    created_at=time.time(),
                    owner=OWNER,
                    user_id=user_id,
                )
            )
        return self._spawn(job)

    def resume(self, session_id: str) -> Job:
        """Continue an ``interrupted`` session with the files it has not finished.

        Raises JobNotFound, or JobConflict when the session is not interrupted.
        """
        with self.engine.connect() as conn:
            session = conn.execute(
                select(
                    IngestSession.status, IngestSession.parameters, IngestSession.state, IngestSession.last_event_id
                ).where(IngestSession.id == session_id)
            ).first()
            if session is None:
                raise JobNotFound(session_id)
            if session.status != "interrupted":
                raise JobConflict(f"only an interrupted session can be resumed (it is {session.status})")
            done = conn.execute(select(Item.path, Item.sha256).where(Item.session_id == session_id)).all()
        job = Job(self, session_id, IngestParameters(**session.parameters), session.state, session.last_event_id)
        job.done_paths = {path for path, _ in done}
        job.seen_hashes = {sha for _, sha in done if sha}
        with self.engine.begin() as conn:
            conn.execute(update(IngestSession).where(IngestSession.id == session_id).values(owner=OWNER))
        return self._spawn(job)

    def cancel(self, session_id: str) -> Job:
        """Ask a running job to stop; raises JobNotFound or JobConflict (not running here)."""
        job = self.jobs.get(session_id)
        if job is None:
            raise JobConflict("the session is not running") if self.exists(session_id) else JobNotFound(session_id)
        job.cancel_requested = True
        return job

    def exists(self, session_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.scalar(select(IngestSession.id).where(IngestSession.id == session_id)) is not None

    def state(self, session_id: str) -> dict[str, Any]:
        """The status JSON: live for a job running here, else as last persisted. Raises JobNotFound."""
        job = self.jobs.get(session_id)
        if job is not None:
            return job.state()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(IngestSession.status, IngestSession.state).where(IngestSession.id == session_id)
            ).first()
        if row is None:
            raise JobNotFound(session_id)
        return {**row.state, "status": row.status}

    def sessions(self, limit: int, user_id: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` sessions (of ``user_id`` only, if given): ``{session_id, status,
        created_at, committed_at, directory, total_files, processed_files, progress_percent,
        errors}`` (``GET /api/ingest/sessions``)."""
        query = select(
            IngestSession.id,
            IngestSession.created_at,
            IngestSession.committed_at,
            IngestSession.status,
            IngestSession.state,
        )
        if user_id is not None:
            query = query.where(IngestSession.user_id == user_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(IngestSession.created_at.desc()).limit(limit)).all()
        listing = []
        for row in rows:  # one query for all; a job running here reports its live state instead
            job = self.jobs.get(row.id)
            state = job.state() if job is not None else {**row.state, "status": row.status}
            listing.append(
                {
                    "session_id": row.id,
                    "status": state["status"],
                    "created_at": row.created_at,
                    "committed_at": row.committed_at,
                    "directory": state["parameters"]["directory"],
                    "total_files": state["total_files"],
                    "processed_files": state["processed_files"],
                    "progress_percent": state["progress_percent"],
                    "errors": state["stats"]["errors"],
                }
            )
        return listing

    def load_nsfw_model(self) -> None:
        """Load the NSFW model once per process, in the threadpool (it takes about a second)."""
        with self._model_lock:  # two jobs starting at once must not both build it
            if not stages.nsfw.model_loaded():
                self.threadpool.apply(stages.nsfw.load_model)

    def shutdown(self) -> None:
        """Stop the running jobs (they become ``interrupted``) and the threadpool."""
        gevent.killall([job.greenlet for job in self.jobs.values() if job.greenlet], block=True, timeout=5)
        self.threadpool.kill()

    def _spawn(self, job: Job) -> Job:
        self.jobs[job.session_id] = job
        job.greenlet = gevent.spawn(job.run)
        return job


def recover_interrupted(engine: Engine) -> int:
    """Mark sessions whose owning process is gone as ``interrupted``; return how many.

    Each gets a ``progress`` event saying so, appended to its log, so a client resuming with
    Last-Event-ID learns it too. A session whose owner is another live process on this host is
    left alone, so running the CLI next to the server does not disturb the server's jobs.
    """
    with engine.begin() as conn:
        rows = conn.execute(
            select(IngestSession.id, IngestSession.owner, IngestSession.state, IngestSession.last_event_id).where(
                IngestSession.status.in_(RUNNING_STATUSES)
            )
        ).all()
        dead = [row for row in rows if not _owner_alive(row.owner)]
        for row in dead:
            seq = row.last_event_id + 1
            state = {**row.state, "status": "interrupted", "last_event_id": seq}
            progress = {k: v for k, v in state.items() if k not in ("session_id", "message", "parameters", "errors")}
            event = make_event(row.id, seq, "progress", progress)
            conn.execute(insert(EventRecord).values(session_id=row.id, seq=seq, type=event.type, data=event.data))
            conn.execute(
                update(IngestSession)
                .where(IngestSession.id == row.id)
                .values(status="interrupted", state=state, last_event_id=seq)
            )
    return len(dead)


def _owner_alive(owner: str | None) -> bool:
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False  # this process just started: nothing of it can be running yet
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Job:
    """One session's run: counters, the event sequence, and the greenlet doing the work."""

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
        self.log = SessionLog(registry.engine, session_id)
        self.greenlet: gevent.Greenlet | None = None
        self.seq = last_event_id
        self.status = "queued"
        self.failure: str | None = None  # why the job failed, for the state
        self.cancel_requested = False
        self.total_files = 0
        self.current_file: str | None = None
        self.done_paths: set[str] = set()
        self.seen_hashes: set[str] = set()
        self.active = 0
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.started_at: float | None = None
        self.run_started = time.monotonic()
        self.run_ended: float | None = None
        self.run_done = 0
        self.stats = dict.fromkeys(STATS_KEYS, 0)
        self.errors: deque[dict[str, Any]] = deque(maxlen=ERRORS_KEPT)
        self.stages = {"scanning": StageProgress()} | {s.NAME: StageProgress() for s in self.stage_modules}
        self._elapsed_before_ms = 0.0
        self._last_progress = 0.0
        self._progress_timer: gevent.Greenlet | None = None
        if saved_state:
            self._restore(saved_state)

    # -- state ---------------------------------------------------------------------------------

    def _restore(self, saved: dict[str, Any]) -> None:
        self.stats.update(saved["stats"])
        self.errors.extend(saved["errors"])
        self.started_at = saved["timing"]["started_at"]
        self._elapsed_before_ms = saved["timing"]["elapsed_ms"]
        for name, data in saved["stages"].items():
            if name in self.stages and name != "scanning":
                self.stages[name] = StageProgress.from_dict(data)

    @property
    def done_files(self) -> int:
        return self.stats["processed_files"] + self.stats["skipped_duplicates"]

    def state(self) -> dict[str, Any]:
        """The status-endpoint JSON (see README, "State")."""
        return {
            "session_id": self.session_id,
            "status": self.status,
            "message": self.failure,
            "parameters": self.parameters.to_dict(),
            "errors": list(self.errors),
            **self.progress(),
        }

    def progress(self) -> dict[str, Any]:
        """The changing part of the state: what a ``progress`` event carries."""
        return {
            "status": self.status,
            "progress_percent": percent(self.done_files, self.total_files, self.status),
            "total_files": self.total_files,
            "processed_files": self.stats["processed_files"],
            "current_file": self.current_file,
            "stages": {name: self.stage_dict(name) for name in self.stages},
            "stats": dict(self.stats),
            "worker_pool": {"active": self.active, "max": self.registry.workers, "queue_depth": self.queue.qsize()},
            "timing": self._timing(),
            "last_event_id": self.seq,
        }

    def stage_dict(self, name: str) -> dict[str, Any]:
        """A stage's state entry. Every stage's total is the number of files found; the scan's
        own total is unknown (None) until it completes."""
        unknown = name == "scanning" and self.stages[name].status != "completed"
        return self.stages[name].to_dict(None if unknown else self.total_files)

    def _timing(self) -> dict[str, Any]:
        run_seconds = (self.run_ended or time.monotonic()) - self.run_started
        rate = self.run_done / run_seconds if run_seconds > 0 else 0.0
        remaining = self.total_files - self.done_files
        running = self.status in RUNNING_STATUSES
        return {
            "started_at": self.started_at,
            "elapsed_ms": round(self._elapsed_before_ms + run_seconds * 1000),
            "files_per_s": round(rate, 2),
            "estimated_remaining_ms": round(remaining / rate * 1000) if running and rate else None,
        }

    # -- events and persistence -----------------------------------------------------------------

    def emit(self, event_type: str, **fields: Any) -> None:
        """Stamp, record and publish an event (hub thread only).

        A terminal event is published only once everything before it is written, so a client
        that sees ``complete`` can fetch every item at once.
        """
        self.seq += 1
        event = make_event(self.session_id, self.seq, event_type, fields)
        self.log.add_event(event)
        if event.terminal:
            self.flush()
        publish(event)

    def emit_progress(self) -> None:
        """Emit ``progress`` now, or once PROGRESS_INTERVAL has passed since the last one."""
        wait = self._last_progress + PROGRESS_INTERVAL - time.monotonic()
        if wait > 0:
            if self._progress_timer is None:
                self._progress_timer = gevent.spawn_later(wait, self._emit_deferred_progress)
            return
        self._last_progress = time.monotonic()
        self.emit("progress", **self.progress())

    def _emit_deferred_progress(self) -> None:
        self._progress_timer = None
        if self.status in RUNNING_STATUSES:
            self.emit_progress()

    def flush(self) -> None:
        """Persist the buffered rows together with the current state."""
        self.log.set_state(self.state())
        self.log.flush()

    def _flush_periodically(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL)
            self.flush()

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
        """The job greenlet: scan, process, finish; always leaves a terminal status persisted."""
        self.started_at = self.started_at or time.time()
        self.run_started = time.monotonic()
        flusher = gevent.spawn(self._flush_periodically)
        workers: list[gevent.Greenlet] = []
        try:
            self.status = "scanning"
            self._set_stage("scanning", "start")
            self.emit_progress()
            if self.parameters.enable_nsfw_detection:
                self.registry.load_nsfw_model()
            catalog_hashes = self._catalog_hashes() if self.parameters.skip_duplicates else set()
            workers = [gevent.spawn(self._work, catalog_hashes) for _ in range(self.registry.workers)]
            self._scan()
            gevent.joinall(workers, raise_error=True)
            self._finish("cancelled" if self.cancel_requested else "completed")
        except gevent.GreenletExit:
            self._finish("interrupted")
        except Exception as exc:
            log.exception("session %s failed", self.session_id)
            self._finish("failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            gevent.killall([*workers, flusher])
            self.flush()
            self.registry.jobs.pop(self.session_id, None)

    def _catalog_hashes(self) -> set[str]:
        with self.registry.engine.connect() as conn:
            return set(conn.scalars(select(CatalogEntry.sha256)))

    def _scan(self) -> None:
        directory = Path(self.parameters.directory)
        root = root_of(directory, self.registry.media_roots)
        prefix = directory.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        scanning = self.stages["scanning"]
        try:
            roots = self.registry.media_roots
            found = scan(
                directory,
                self.parameters.patterns,
                listdir=lambda d: self.registry.threadpool.apply(list_directory, (d, roots)),
                on_error=lambda rel, exc: self._record_error(prefix + rel, "scanning", _message(exc)),
            )
            for path, relpath in found:
                if self.cancel_requested or self.total_files == self.parameters.max_files:
                    break
                self.total_files += 1
                scanning.processed += 1
                if prefix + relpath not in self.done_paths:
                    self.queue.put((path, root, prefix + relpath))
                self.emit_progress()
        finally:
            for _ in range(self.registry.workers):
                self.queue.put(None)
        self._set_stage("scanning", "finish")
        self.emit_progress()

    def _work(self, catalog_hashes: set[str]) -> None:
        # No timeout needed: _scan's ``finally`` always queues one None per worker.
        while (task := self.queue.get()) is not None:
            if not self.cancel_requested:
                self._process(*task, catalog_hashes)

    def _process(self, path: Path, root: Path, relpath: str, catalog_hashes: set[str]) -> None:
        if self.registry.file_delay:
            gevent.sleep(self.registry.file_delay)
        self.status = "processing"
        self.current_file = relpath
        self.active += 1
        ctx = FileContext(path, relpath, self.parameters, self.registry.thumbnail_dir)
        errors: list[dict[str, str]] = []
        status = "ok"
        try:
            for module in self.stage_modules:
                if status != "ok":
                    self.stages[module.NAME].processed += 1  # not run for this file, but accounted for
                    continue
                status = self._run_stage(module, ctx, errors)
                if module is stages.identify and status == "ok":
                    status = self._check_duplicate(ctx.item["sha256"], catalog_hashes)
        finally:
            self.active -= 1
        self._complete_file(ctx, root, status, errors)

    def _run_stage(self, module: Any, ctx: FileContext, errors: list[dict[str, str]]) -> str:
        stage = self.stages[module.NAME]
        if stage.start():
            self.emit("stage", stage=module.NAME, **self.stage_dict(module.NAME))
        stage.in_flight += 1
        try:
            failure = self.registry.threadpool.apply(_run_in_thread, (module.run, ctx))
        finally:
            stage.in_flight -= 1
            stage.processed += 1
        if failure is not None:
            stage.errors += 1
            message = _message(failure)
            errors.append({"stage": module.NAME, "message": message})
            self._record_error(ctx.relpath, module.NAME, message)
        if stage.processed == self.total_files and self.stages["scanning"].status == "completed":
            self._set_stage(module.NAME, "finish")
        return "ok" if failure is None else "error"

    def _check_duplicate(self, sha256: str, catalog_hashes: set[str]) -> str:
        if self.parameters.skip_duplicates and (sha256 in catalog_hashes or sha256 in self.seen_hashes):
            return "skipped"
        self.seen_hashes.add(sha256)
        return "ok"

    def _complete_file(self, ctx: FileContext, root: Path, status: str, errors: list[dict[str, str]]) -> None:
        item = ctx.item
        self._count(status, item)
        item_id = new_id()
        self.log.add_item(
            {
                "id": item_id,
                "seq": self.done_files,
                "root": str(root),
                "path": ctx.relpath,
                "status": status,
                "sha256": item["sha256"],
                "fields": item,
                "errors": errors,
            }
        )
        self.emit("file", item_id=item_id, path=ctx.relpath, status=status, error=errors[0] if errors else None)
        self.emit_progress()
        if self.log.pending >= MAX_PENDING:
            self.flush()

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
        if self._progress_timer is not None:
            self._progress_timer.kill(block=False)  # the terminal event carries the final progress
        if status == "completed":
            for stage in self.stages.values():
                stage.finish()
        self.run_ended = time.monotonic()
        self.status = status
        self.failure = message
        self.current_file = None
        event_type = {"completed": "complete", "cancelled": "cancelled", "failed": "failed"}.get(status)
        if event_type is None:  # interrupted: not terminal, the session can be resumed
            self.emit("progress", **self.progress())
        else:
            self.emit(event_type, message=message, **self.progress())


def _run_in_thread(run: Any, ctx: FileContext) -> Exception | None:
    """Call a stage in a threadpool thread; hand its exception back as a value, since an
    exception escaping a threadpool task is also printed as a traceback by gevent."""
    try:
        run(ctx)
    except Exception as exc:
        return exc
    return None


def _message(exc: BaseException) -> str:
    """A one-line, user-facing description of an exception (never a traceback)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, PermissionError):
        return "permission denied"
    return text[:500]

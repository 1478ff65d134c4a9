"""A session's run: the job greenlet.

``Job.run`` scans the directory (listings in the registry's threadpool: it is I/O) into a bounded
queue while ``concurrency`` worker greenlets take files from it; each file goes through its
stages in a stage process (``filerun.FileRun``) and is recorded as an item (``Job.record_file``,
the one per-file recording step); a session started with ``watch`` then watches its directory
(``watch.FolderWatch``, through the same queue, workers and recording step); then the job finishes
with a terminal status. The hub only does bookkeeping. Every state change becomes an event
(``Job.emit``), committed with the state by the job's writer (``writer.py``) and only then
published. The job's counters are its ``state`` (``state.JobState``); a cancel from any channel
raises its ``cancel`` flag (``cancel.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.queue
from gevent.threadpool import ThreadPool
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError

from ingestapp import stages
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.paths import display_path, root_of
from ingestapp.core.vocabulary import TERMINAL_EVENT_OF, EventType, SessionStatus, StageName, StageStatus
from ingestapp.events.log import LeaseLost, SessionLog
from ingestapp.jobs import watch
from ingestapp.jobs.cancel import CancelFlag
from ingestapp.jobs.filerun import FileRecord, FileRun, FileRunner
from ingestapp.jobs.pairs import Pairs
from ingestapp.jobs.recorded import Earlier
from ingestapp.jobs.scanner import ScannedFile, list_directory, scan
from ingestapp.jobs.state import JobState
from ingestapp.jobs.throttle import ProgressThrottle
from ingestapp.jobs.writer import Writer
from ingestapp.store.models import CatalogEntry, ErrorEntry
from ingestapp.work.pool import WorkPool
from ingestapp.work.protocol import FileTask
from ingestapp.work.remote import RemoteFiles

log = logging.getLogger(__name__)


class Host(Protocol):
    """What a job needs of its registry (``registry.JobRegistry``)."""

    engine: Engine
    owner: str  # the lease owner id
    lease: float  # seconds
    workers: int  # the stage-process pool's size: files a job runs at once here
    scan_queue: int
    media_roots: list[Path]
    thumbnail_dir: Path
    file_delay: float
    watch_settings: watch.Settings
    threadpool: ThreadPool
    pool: WorkPool
    jobs: dict[str, Job]


class Job:
    """One session's run: its ``state`` (counters), ``cancel`` flag, ``writer`` (events, commits)
    and the greenlet doing the work. ``earlier``: what earlier runs recorded (a resume)."""

    def __init__(self, registry: Host, session_id: str, parameters: IngestParameters,
                 earlier: Earlier | None = None) -> None:
        self.registry = registry
        self.session_id = session_id
        self.parameters = parameters
        self.pipeline = stages.enabled_stages(parameters)
        self.names = [stage.name for stage in self.pipeline]
        self.state = JobState(session_id=session_id, parameters=parameters,
                              stage_names=[StageName.SCANNING, *self.names], concurrency=registry.workers)
        self.cancel = CancelFlag()
        self.done_paths: set[bytes] = set()  # path_bytes of the items already stored
        #: Content hashes met by this session: SHA-256 → the file that has it (a duplicate is
        #: another file with the same hash; asking again for the same file gives the same answer).
        self.seen_hashes: dict[str, Path] = {}
        self.pairs = Pairs()  # item ids given at scan time: each item of a RAW+JPEG pair names the other
        last_event_id = 0
        if earlier is not None:
            self.state.restore(earlier.saved_state, earlier.recorded)
            self.done_paths, self.seen_hashes = earlier.done_paths, earlier.seen_hashes
            last_event_id = earlier.last_event_id
        self.catalog_hashes: set[str] = set()  # read at the start of a run that skips duplicates
        #: A watching session's item columns (``watch.item_columns``) by relpath, until the file is recorded.
        self.item_extras: dict[str, dict[str, Any]] = {}
        #: Where the files go: this process's stage-process pool, or the work tier (``use_remote``).
        self.remote: RemoteFiles | None = None
        # Bounded: the scan waits while the workers are this far behind (backpressure).
        self.queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=registry.scan_queue)
        session_log = SessionLog(registry.engine, session_id, registry.owner, registry.lease)
        self.writer = Writer(session_log, registry.lease, last_event_id, self.state.to_dict, self._committed)
        self.greenlet: gevent.Greenlet | None = None
        self._progress = ProgressThrottle(
            lambda: self.emit(EventType.PROGRESS, **self.state.progress(self.writer.seq)), self.is_running
        )
        self._lease_lost = False

    @property
    def committed_state(self) -> dict[str, Any]:
        """The state as of the last commit: what the status API shows, and what the database holds."""
        return self.writer.committed_state

    def use_remote(self, remote: RemoteFiles, concurrency: int) -> None:
        """Send the files to the work tier, ``concurrency`` at once (in a worker process)."""
        self.remote = remote
        self.state.concurrency = concurrency

    def is_running(self) -> bool:
        """Whether the session's status is a running one (queued, scanning, processing, watching)."""
        return self.state.running

    # -- events -----------------------------------------------------------------------------------

    def emit(self, event_type: EventType, **fields: Any) -> None:
        """The job's one way to an event (``writer.Writer.emit``). Hub thread only."""
        self.writer.emit(event_type, **fields)

    def emit_progress(self) -> None:
        """Emit ``progress`` now, or once PROGRESS_INTERVAL has passed since the last one (``throttle.py``)."""
        self._progress.request()

    def emit_stage(self, name: str) -> None:
        """Emit stage ``name``'s entry (a ``stage`` event): it started or finished."""
        self.emit(EventType.STAGE, stage=name, **self.state.stage_dict(name))

    def finish_stage(self, name: str) -> None:
        """Mark stage ``name`` completed (every file is done with it), announcing it once."""
        if self.state.stages[name].finish():
            self.emit_stage(name)

    def record_error(self, file: str, stage: str, message: str) -> None:
        """An error entry for ``file`` (display form) in ``stage``: counted, buffered for the errors
        table and announced (an ``error`` event)."""
        entry = {"file": file, "stage": stage, "message": message, "time": time.time()}
        self.state.add_error(entry)
        self.writer.log.add_error(entry)
        self.emit(EventType.ERROR, **entry)

    def record_file(self, record: FileRecord) -> None:
        """The per-file recording step: count a file done with its stages, buffer its item for the
        next commit and announce it (``file`` event)."""
        self.state.count_file(record.status, record.item)
        item_id, pair_id = self.pairs.take(record.relpath)
        self.writer.log.add_item({
            "id": item_id,
            "seq": self.state.done_files,
            "root": str(record.root),
            "path": record.shown,
            "path_bytes": os.fsencode(record.relpath),
            "status": record.status,
            "sha256": record.item["sha256"],
            "phash": record.item.get("phash"),  # stages/similar.py; a column, so similar pictures are found by SQL
            "fields": record.item,
            "errors": record.errors,
            "worker": record.worker,
            "pair_id": pair_id,
            **watch.item_columns(self.item_extras.pop(record.relpath, None)),
        })
        error = record.errors[0] if record.errors else None
        self.emit(EventType.FILE, item_id=item_id, path=record.shown, status=record.status, error=error)
        self.emit_progress()

    def is_duplicate(self, sha256: str, path: Path) -> bool:
        """Whether the file at ``path`` (absolute) with content ``sha256`` is a duplicate: the hash is
        in the catalog, or another file of this session has it. The same file always gets the same
        answer, so a file run again (its stage process died) is not its own duplicate."""
        return sha256 in self.catalog_hashes or self.seen_hashes.setdefault(sha256, path) != path

    def _committed(self, cancel: bool, release: bool) -> None:
        if cancel:
            self.cancel.request()  # the row's channel (``cancel.RowChannel``)
        if self.remote is not None and not release:
            self.remote.renew()  # the run stays open for the workers while the lease is held

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> None:
        """The job greenlet: scan, process, finish; always leaves a terminal status persisted
        (or, when even that write fails, an unrenewed lease that the reaper turns into
        ``interrupted``). A failing write, worker or the writer itself fails the job at once."""
        self.state.timing.start_run()
        writer = self._spawn_linked(self.writer.run)
        workers: list[gevent.Greenlet] = []
        try:
            self.state.status = SessionStatus.SCANNING
            if self.state.stages[StageName.SCANNING].start():
                self.emit_stage(StageName.SCANNING)
            self.emit_progress()
            self.catalog_hashes = self._catalog_hashes() if self.parameters.skip_duplicates else set()
            if self.remote is not None:
                self.remote.start()
            workers = [self._spawn_linked(self._work) for _ in range(self.state.concurrency)]
            self._scan()
            gevent.joinall(workers, raise_error=True)
            if self.parameters.watch and not self.cancel:
                watch.FolderWatch(self, self.registry.watch_settings).run()
            self._finish(SessionStatus.CANCELLED if self.cancel else SessionStatus.COMPLETED)
        except gevent.GreenletExit:
            self._finish(SessionStatus.INTERRUPTED)
        except LeaseLost:
            self._lease_lost = True  # reaped: the session is another's now; write nothing more
            log.warning("session %s: lease lost; stopping without writing", self.session_id)
        except Exception as exc:
            log.exception("session %s failed", self.session_id)
            self._finish(SessionStatus.FAILED, message=_failure_message(exc))
        finally:
            gevent.killall(workers)
            if self.remote is not None:
                self.remote.stop()
            self.writer.stop()
            writer.join()
            if not self._lease_lost:
                self.writer.final_commit()
            if self.registry.jobs.get(self.session_id) is self:
                del self.registry.jobs[self.session_id]

    def _spawn_linked(self, function: Callable[..., Any], *args: Any) -> gevent.Greenlet:
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
        scanning = self.state.stages[StageName.SCANNING]
        reported = self._scanning_errors_reported()

        def on_error(relpath: str, message: str) -> None:
            file = display_path((prefix + relpath).rstrip("/") or ".")
            if file not in reported:  # a resumed scan meets the same bad links again
                self.record_error(file, StageName.SCANNING, message)

        roots = self.registry.media_roots
        found = scan(
            directory,
            self.parameters.patterns,
            listdir=lambda d: self.registry.threadpool.apply(list_directory, (d, roots)),
            on_error=on_error,
        )
        for file in _top_level_errors_named(self.pairs.scan(found, prefix), prefix):
            if self.cancel:
                break
            self.state.files_found += 1
            if self.state.total_files == self.parameters.max_files:
                continue  # counted, not processed: the page says how many files the folder holds
            self.state.total_files += 1
            scanning.processed += 1
            if os.fsencode(prefix + file.relpath) not in self.done_paths:
                self.state.queued += 1
                self.queue.put((file, root, prefix + file.relpath))  # waits while the queue is full
            self.emit_progress()
        # Not in a ``finally``: when the scan fails, run() kills the workers instead.
        for _ in range(self.state.concurrency):
            self.queue.put(None)
        self.finish_stage(StageName.SCANNING)
        self.emit_progress()

    def _scanning_errors_reported(self) -> set[str]:
        """Files an earlier run of this session already reported from the scan (empty when new)."""
        with self.registry.engine.connect() as conn:
            return set(conn.scalars(select(ErrorEntry.file).where(
                ErrorEntry.session_id == self.session_id, ErrorEntry.stage == StageName.SCANNING
            )))

    def _work(self) -> None:
        # No timeout needed: _scan queues one None per worker, or run() kills the workers.
        while (task := self.queue.get()) is not None:
            self.state.queued -= 1
            if not self.cancel:
                self.state.active += 1
                try:
                    self._process(*task)
                finally:
                    self.state.active -= 1

    def _process(self, file: ScannedFile, root: Path, relpath: str) -> None:
        """Run the stages on one file (``relpath`` relative to ``root``, exact bytes in
        ``os.fsdecode`` form: stored as ``path_bytes``; people see its display form)."""
        task = FileTask(
            path=root / relpath, relpath=display_path(relpath), parameters=self.parameters,
            thumbnail_dir=self.registry.thumbnail_dir, real_path=file.real, identity=file.identity,
            media_roots=tuple(self.registry.media_roots), stages=tuple(stage.module for stage in self.pipeline),
            check_duplicates=self.parameters.skip_duplicates, delay=self.registry.file_delay,
        )
        self.state.status = SessionStatus.WATCHING if self.state.watch is not None else SessionStatus.PROCESSING
        if self.parameters.watch and relpath not in self.item_extras:  # scanned: its stat, for the watch
            self.item_extras[relpath] = self.registry.threadpool.apply(watch.stat_columns, (file.real,))
        self.state.current_file = task.relpath
        runner: FileRunner = self.remote or self.registry.pool
        FileRun(self, task, root, relpath, self.names).run(runner)

    def _finish(self, status: SessionStatus, message: str | None = None) -> None:
        self._progress.cancel()  # the terminal event carries the final progress
        for stage in self.state.stages.values():
            if status == SessionStatus.COMPLETED:
                stage.finish()
            else:
                stage.stop(StageStatus(status))
        self.state.timing.run_ended = time.monotonic()
        self.state.status = status
        self.state.failure = message
        self.state.current_file = None
        event_type = TERMINAL_EVENT_OF.get(status)
        if event_type is None:  # interrupted: not terminal, the session can be resumed
            self.emit(EventType.PROGRESS, **self.state.progress(self.writer.seq))
        else:
            self.emit(event_type, message=message, **self.state.progress(self.writer.seq))


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

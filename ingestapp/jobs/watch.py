"""Watch folders (issue 20): after its scan, a session started with ``watch`` stays ``watching``
and ingests every new or changed file of its directory that matches its pattern.

Detection: inotify through ``watchdog`` (its observer runs in its own thread, a greenlet when
gevent patched threading; either way events reach the hub only through
``loop.run_callback_threadsafe``), plus a reconciliation scan at the start and every
``INGEST_WATCH_RESCAN`` seconds that compares each file's size and mtime with its path's latest
item (``versions.py``), which also covers network filesystems where inotify is silent. When inotify
cannot watch the tree (ENOSPC: ``fs.inotify.max_user_watches`` is exhausted) the watch polls
instead, a reconciliation scan every ``INGEST_WATCH_POLL`` seconds, with a warning in the log and
in the state's ``watch``.

Whole files only: a file is taken once settled (``settle.py``). A taken file whose path has an
item already is hashed first: the same content only updates the item's size and mtime; a new
content becomes the path's next ``version``. Taken files go through the job's own queue, workers
and per-file path (``Job._process``), so their events, duplicates and errors are a scan's.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.queue
from sqlalchemy import Engine

from ingestapp.catalog.commit import import_items
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.paths import OutsideMediaRoots, UnusablePath, confine, display_path, root_of
from ingestapp.core.patterns import compile_patterns
from ingestapp.core.vocabulary import SessionStatus, StageName
from ingestapp.jobs import versions
from ingestapp.jobs.cancel import CancelFlag
from ingestapp.jobs.scanner import ScannedFile, list_directory, scan
from ingestapp.jobs.settle import FileStat, Settler
from ingestapp.jobs.state import JobState
from ingestapp.jobs.writer import Writer
from ingestapp.store import db

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between two looks at the settling files, the cancel flag and the committed files
DIRECTORY_CHECK = 1.0  # seconds between two checks that the watched directory is still there
SCAN_BATCH = 500  # files a reconciliation scan stats and looks up at once


@dataclass(frozen=True)
class Settings:
    """``INGEST_WATCH_SETTLE``, ``_RESCAN``, ``_POLL`` (seconds) and the ``_FAULT`` test hook."""

    settle: float
    rescan: float
    poll: float
    fault: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        return cls(config["WATCH_SETTLE"], config["WATCH_RESCAN"], config["WATCH_POLL"], config["WATCH_FAULT"])


class WatchEnded(RuntimeError):
    """The watch cannot go on (its directory disappeared); the message says why, in words."""


class WatchedJob(Protocol):
    """What the watch uses of ``job.Job`` (the job greenlet runs ``FolderWatch.run``)."""

    session_id: str
    parameters: IngestParameters
    registry: Any  # job.Host
    queue: gevent.queue.Queue
    state: JobState
    cancel: CancelFlag
    writer: Writer
    item_extras: dict[str, dict[str, Any]]
    done_paths: set[bytes]

    @property
    def committed_state(self) -> dict[str, Any]: ...
    def emit_progress(self) -> None: ...
    def _spawn_linked(self, function: Any, *args: Any) -> gevent.Greenlet: ...
    def _work(self) -> None: ...


def item_columns(extras: dict[str, Any] | None) -> dict[str, Any]:
    """An item row's watch columns: ``version``, ``size``, ``mtime_ns`` (1, None, None unless the
    watch set them: every row of a batch insert needs the same keys)."""
    return {"version": 1, "size": None, "mtime_ns": None, **(extras or {})}


def stat_columns(real: str) -> dict[str, Any]:
    """The ``size`` and ``mtime_ns`` of a scanned file of a watching session, before its stages run
    (so a later change is seen). Blocking I/O: call it through the threadpool."""
    stat = FileStat.of(real)
    return {} if stat is None else {"size": stat.size, "mtime_ns": stat.mtime_ns}


def file_sha256(path: str) -> str:
    """The SHA-256 (hex) of a file's bytes. Blocking I/O: call it through the threadpool."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class FolderWatch:
    """The watch of one job: runs in the job greenlet after the scan, until a cancel (or failure)."""

    def __init__(self, job: WatchedJob, settings: Settings) -> None:
        self.job = job
        self.settings = settings
        self.registry = job.registry
        self.engine: Engine = job.registry.engine
        self.directory = Path(job.parameters.directory)
        self.root = root_of(self.directory, self.registry.media_roots)
        prefix = self.directory.relative_to(self.root).as_posix()
        self.prefix = "" if prefix == "." else prefix + "/"
        self.matches = compile_patterns(job.parameters.patterns)
        self.settler = Settler(settings.settle)
        #: Files queued by the watch, until their item is committed: relpath -> the seq at or after
        #: their ``file`` event (None while processing). A busy file is not taken again meanwhile.
        self.busy: dict[str, int | None] = {}
        self.observer: Any = None
        self.loop = gevent.get_hub().loop
        self.rescan_soon = False
        imported = versions.import_totals(self.engine, job.session_id) if job.parameters.auto_import else None
        self._inform(mode="inotify", warning=None, last_file_at=None, imported=imported)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Watch until the job is cancelled. Raises WatchEnded when the directory disappears, or
        what a worker or the database raises (the job then fails)."""
        job = self.job
        job.state.status = SessionStatus.WATCHING
        job.done_paths.clear()  # only the scan reads it; from here on the database says what was done
        self._start_inotify()
        workers = [job._spawn_linked(job._work) for _ in range(job.state.concurrency)]
        scanner: gevent.Greenlet | None = None
        try:
            if job.parameters.auto_import:
                self._import(None)
            job.emit_progress()
            next_scan = next_check = time.monotonic()
            while not job.cancel:
                now = time.monotonic()
                if (now >= next_scan or self.rescan_soon) and (scanner is None or scanner.dead):
                    self.rescan_soon = False
                    scanner = job._spawn_linked(self._reconcile)
                    next_scan = now + (self.settings.poll if self.observer is None else self.settings.rescan)
                if now >= next_check:
                    self._check_directory()
                    next_check = now + DIRECTORY_CHECK
                self._take_settled()
                self._release_committed()
                gevent.sleep(TICK)
        except BaseException:
            gevent.killall(workers)
            raise
        finally:
            if scanner is not None:
                scanner.kill()
            self._stop_inotify()
        for _ in workers:
            job.queue.put(None)
        gevent.joinall(workers, raise_error=True)

    def _inform(self, **changes: Any) -> None:
        """Change the state's ``watch`` (a new dict: the last committed state keeps the old one)."""
        self.job.state.watch = {**(self.job.state.watch or {}), **changes}

    def _check_directory(self) -> None:
        if not self.registry.threadpool.apply(os.path.isdir, (self.directory,)):
            name = display_path(self.prefix.rstrip("/") or ".")
            raise WatchEnded(f"the watched directory {name} disappeared; the watch ended")

    # -- detection ----------------------------------------------------------------------------------

    def _start_inotify(self) -> None:
        """Watch the tree with inotify; on failure (ENOSPC, EMFILE...) poll, saying so."""
        try:
            if self.settings.fault == "enospc":  # test hook: what inotify_add_watch returns at the limit
                raise OSError(errno.ENOSPC, "inotify watch limit reached")
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
            observer.schedule(_Handler(self._heard_threadsafe), str(self.directory), recursive=True)
            observer.start()  # adds a watch per directory here: ENOSPC is raised now
            self.observer = observer
        except (OSError, ImportError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            warning = (f"inotify cannot watch this folder ({reason}); polling every {self.settings.poll:g} s "
                       "instead (raise fs.inotify.max_user_watches to watch with inotify)")
            log.warning("session %s: %s", self.job.session_id, warning)
            self._inform(mode="polling", warning=warning)

    def _stop_inotify(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer = None  # its thread ends by itself within its timeout (1 s)

    def _heard_threadsafe(self, path: str, is_directory: bool) -> None:
        """From the observer's thread: hand the event to the hub (never touch hub state here)."""
        self.loop.run_callback_threadsafe(self._heard, path, is_directory)

    def _heard(self, path: str, is_directory: bool) -> None:
        """On the hub: a file was created, written or moved in under ``path`` (absolute)."""
        relpath = os.path.relpath(path, self.directory).replace(os.sep, "/")
        if relpath.startswith("../") or any(part.startswith(".") for part in relpath.split("/")):
            return  # outside, or hidden (temporary names of rsync and Syncthing): as the scan
        if is_directory:
            self.rescan_soon = True  # a directory moved in: its files made no event of their own
        elif self.matches(relpath):
            self.settler.changed(relpath, time.monotonic())

    def _reconcile(self) -> None:
        """Find the files new or changed since they were ingested: each goes to the settler."""
        roots = self.registry.media_roots
        found = scan(self.directory, self.job.parameters.patterns,
                     listdir=lambda d: self.registry.threadpool.apply(list_directory, (d, roots)))
        try:
            for batch in _batches(found, SCAN_BATCH):
                stats = self.registry.threadpool.apply(_stat_all, ([file.real for file in batch],))
                known = versions.latest(self.engine, self.job.session_id, [self._key(f.relpath) for f in batch])
                now = time.monotonic()
                for file, stat in zip(batch, stats, strict=True):
                    latest = known.get(self._key(file.relpath))
                    if stat is not None and (latest is None or not latest.matches(stat)):
                        self.settler.seen(file.relpath, stat, now)
        except OSError as exc:  # the directory itself: _check_directory ends the watch if it is gone
            log.warning("session %s: reconciliation scan failed: %s", self.job.session_id, exc)

    # -- taking files -------------------------------------------------------------------------------

    def _take_settled(self) -> None:
        due = [relpath for relpath in self.settler.due(time.monotonic()) if self.prefix + relpath not in self.busy]
        if not due:
            return
        paths = [str(self.directory / relpath) for relpath in due]
        stats = self.registry.threadpool.apply(_stat_all, (paths,))
        now = time.monotonic()
        for relpath, stat in zip(due, stats, strict=True):
            if self.settler.checked(relpath, stat, now):
                self._take(relpath, stat)  # type: ignore[arg-type]

    def _take(self, relpath: str, stat: FileStat) -> None:
        """Queue a settled file for the job's workers as its path's next version, unless its content
        is the path's latest item's."""
        job, key = self.job, self._key(relpath)
        latest = versions.latest(self.engine, job.session_id, [key]).get(key)
        if latest is not None and latest.matches(stat):
            return
        real = self.registry.threadpool.apply(_confined, (self.directory / relpath, self.registry.media_roots))
        if real is None:
            return  # a link leading outside the media roots: never followed (the scan reports it)
        if latest is not None:
            try:
                sha256 = self.registry.threadpool.apply(file_sha256, (real,))
            except OSError:
                return  # gone meanwhile
            if sha256 == latest.sha256:
                versions.record_stat(self.engine, job.session_id, key, latest.version, stat)
                return
        version = latest.version + 1 if latest is not None else 1
        job.item_extras[self.prefix + relpath] = {"version": version, "size": stat.size, "mtime_ns": stat.mtime_ns}
        self.busy[self.prefix + relpath] = None
        job.state.files_found += 1  # watched files are found files too: files_found stays >= total_files
        job.state.total_files += 1
        job.state.stages[StageName.SCANNING].processed += 1
        job.state.queued += 1
        job.queue.put((ScannedFile(relpath, real, (stat.dev, stat.ino)), self.root, self.prefix + relpath))
        job.emit_progress()

    def _release_committed(self) -> None:
        """Forget the busy files whose item is committed (their ``file`` event is out), and import
        them with ``auto_import``."""
        job = self.job
        committed = job.committed_state["last_event_id"]
        released: list[bytes] = []
        for path, seq in list(self.busy.items()):
            if seq is None and path not in job.item_extras:  # record_file took its columns
                self.busy[path] = job.writer.seq
                self._inform(last_file_at=time.time())
                job.emit_progress()  # the page shows the time of the last file
            elif seq is not None and seq <= committed:
                del self.busy[path]
                released.append(os.fsencode(path))
        if released and job.parameters.auto_import:
            self._import(released)

    def _import(self, released: list[bytes] | None) -> None:
        """Import the released files' newest items (None: all not imported yet, at the start)."""
        ids = None
        if released is not None:
            known = versions.latest(self.engine, self.job.session_id, released)
            ids = versions.item_ids(self.engine, self.job.session_id, [(p, k.version) for p, k in known.items()])
        if any(db.off_hub(import_items, self.engine, self.job.session_id, ids).values()):
            self._inform(imported=versions.import_totals(self.engine, self.job.session_id))
            self.job.emit_progress()

    def _key(self, relpath: str) -> bytes:
        return os.fsencode(self.prefix + relpath)


class _Handler:
    """watchdog's handler (``dispatch`` is what its observer calls): a file created, written,
    closed after writing or moved in, and a directory created or moved in, to ``heard``. Deleted
    files are ignored (nothing is removed from the catalog), and so are opens and reads (the
    stages' own)."""

    FILE_EVENTS = frozenset({"created", "modified", "closed", "moved"})
    DIRECTORY_EVENTS = frozenset({"created", "moved"})

    def __init__(self, heard: Callable[[str, bool], None]) -> None:
        self.heard = heard

    def dispatch(self, event: Any) -> None:
        wanted = self.DIRECTORY_EVENTS if event.is_directory else self.FILE_EVENTS
        if event.event_type in wanted:
            path = event.dest_path if event.event_type == "moved" else event.src_path
            self.heard(os.fsdecode(path), event.is_directory)


def _stat_all(paths: list[str]) -> list[FileStat | None]:
    return [FileStat.of(path) for path in paths]


def _confined(path: Path, media_roots: list[Path]) -> str | None:
    try:
        return str(confine(path, media_roots))
    except (OutsideMediaRoots, UnusablePath):
        return None


def _batches(items: Iterator[ScannedFile], size: int) -> Iterator[list[ScannedFile]]:
    while batch := list(islice(items, size)):
        yield batch

"""The work tier's embedded default: worker processes that run every stage of a file.

A ``WorkPool`` holds ``size`` worker processes, started once (lazily, at the first file) with the
``spawn`` start method: each is a fresh interpreter, never a fork of the gevent-patched web
process, so stage code runs on plain native threads with plain locks (Pillow, PyAV, onnxruntime,
``datetime.strptime``, ``tempfile``: no workaround needed). Each process lowers its CPU priority
(``os.nice(INGEST_WORKER_NICE)``: serving comes first) and loads the NSFW model once, in
:func:`serve`, before its first file.

Files of several sessions share the processes round robin by session, not first come, first served
(``fairshare.py``): a small ingest is not stuck behind a big one.

One file is one task: the job greenlet sends a :class:`~ingestapp.work.protocol.FileTask` over the
process's pipe and the process runs all the file's stages, sending a
:class:`~ingestapp.work.protocol.StageReport` after each so the job counts stages and reports errors
as they happen, then the file's ``FileResult`` (``protocol.py`` defines every message, for the work
tier too).
The hub waits on the pipe with ``gevent.socket.wait_read``: it never blocks and never decodes,
hashes, classifies or thumbnails. A process that dies mid-file (a decoder segfault) closes its end
of the pipe: the file's wait raises :class:`WorkerDied` and a new process takes its place. A file
still running after ``time_limit`` seconds (a decoder stuck on a hostile file) has its process
killed the same way (:class:`FileTimedOut`).

Pools are per web process and shared by its apps (:func:`shared_pool`), like gevent's hub
threadpool: starting interpreters costs about a second of CPU each. The server starts its pool at
boot (``gunicorn.conf.py``); the CLI and tests at their first file. Worker processes are daemonic
(terminated when the web process exits) and end on their own when the pipe closes.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import gevent.socket

from ingestapp.core.paths import display_path, scrub_paths
from ingestapp.stages.base import FileContext
from ingestapp.work.fairshare import FairShare
from ingestapp.work.protocol import FileResult, FileTask, Identified, StageReport, Started, stops_after, worker_name

#: Never ``fork``: a fork of a monkey-patched process inherits the hub and patched locks.
CONTEXT = multiprocessing.get_context("spawn")

WORKER_DIED = "worker process died"


class WorkerDied(RuntimeError):
    """The worker process running a file exited (crashed or was killed) before finishing it; the
    message is the error entry's, ``worker`` the process's ``host:pid`` when known."""

    def __init__(self, message: str, worker: str | None = None) -> None:
        super().__init__(message)
        self.worker = worker


class FileTimedOut(WorkerDied):
    """A file ran past the time limit; its worker process was killed."""


class FileAbandoned(RuntimeError):
    """The job gave up waiting for a file (it was cancelled); its process was killed."""


#: Called in the hub for each stage a worker ran, as soon as it is reported.
OnStage = Callable[[StageReport], None]
#: Called in the hub after identify (with ``check_duplicates``): is this SHA-256 a duplicate?
IsDuplicate = Callable[[str], bool]
#: Called in the hub every POLL_INTERVAL while a file is in a process: give up on it now?
Abandon = Callable[[], bool]

POLL_INTERVAL = 0.1  # seconds
STARTUP = 60  # seconds a new worker process may take to start before its first file counts


class WorkPool:
    """``size`` worker processes at CPU priority ``nice``; files wait for an idle one, in their
    session's turn, and may run ``time_limit`` seconds each."""

    def __init__(self, size: int, nice: int, time_limit: float) -> None:
        self.size = max(1, size)
        self.nice = nice
        self.time_limit = time_limit
        self._idle: FairShare[_Worker] = FairShare(POLL_INTERVAL)
        self._workers: set[_Worker] = set()
        self.replaced = 0  # processes started to replace dead or abandoned ones

    def run_file(
        self, task: FileTask, on_stage: OnStage, is_duplicate: IsDuplicate, abandon: Abandon, session_id: str
    ) -> FileResult:
        """Run ``task``, a file of session ``session_id``, in an idle worker process, given round
        robin by session (``fairshare.py``). Call from a greenlet: it waits for an idle process and
        for the result without blocking the hub. Raises WorkerDied (FileTimedOut after
        ``time_limit`` seconds), or FileAbandoned once ``abandon()`` is true (a process the file
        had is replaced in every case)."""
        self.start()  # at the first file, and after a replacement
        worker = self._idle.take(session_id, abandon)
        if worker is None:
            raise FileAbandoned("abandoned after a cancel")
        try:
            result = worker.run(task, on_stage, is_duplicate, abandon, self.time_limit)
        except BaseException as exc:
            # Dead, or abandoned mid-file (the job was killed): a process still busy with a file,
            # or waiting for an answer, must not get the next one.
            self._replace(worker)
            if isinstance(exc, WorkerDied):
                exc.worker = worker.name
            raise
        self._idle.put(worker)
        return result

    def close(self) -> None:
        """Kill every worker process (a file being processed is abandoned)."""
        for worker in list(self._workers):
            worker.kill()
        self._workers.clear()
        self._idle.drop_idle()

    def start(self) -> None:
        """Start the processes missing (all of them at first; they load in the background, about
        a second of CPU each). ``run_file`` calls it; a server calls it at boot to be warm."""
        for _ in range(self.size - len(self._workers)):
            worker = _Worker(self.nice)
            self._workers.add(worker)
            self._idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker``; the next file starts a new process in its place."""
        worker.kill()
        if worker in self._workers:
            self._workers.discard(worker)
            self.replaced += 1


class _Worker:
    """One worker process and the web process's end of its pipe."""

    def __init__(self, nice: int) -> None:
        self.conn, child = CONTEXT.Pipe()
        for end in (self.conn, child):  # a monkey-patched socketpair is non-blocking; these block
            os.set_blocking(end.fileno(), True)
        self.process = CONTEXT.Process(target=serve, args=(child, nice), daemon=True, name="ingest-worker")
        self.process.start()  # spawn: fork+exec of a new interpreter; does not wait for it
        child.close()  # the child holds the only other end: its death is EOF here
        self.name = f"{socket.gethostname()}:{self.process.pid}"  # its worker_name()

    def run(
        self, task: FileTask, on_stage: OnStage, is_duplicate: IsDuplicate, abandon: Abandon, time_limit: float
    ) -> FileResult:
        self._send(task)
        deadline = time.monotonic() + time_limit + STARTUP  # a new process first loads the model
        while True:
            message = self._receive(abandon, deadline, time_limit)
            if isinstance(message, Started):
                deadline = time.monotonic() + time_limit
            elif isinstance(message, StageReport):
                on_stage(message)
            elif isinstance(message, Identified):
                self._send(is_duplicate(message.sha256))
            else:  # a FileResult: the file is done
                return message

    def _send(self, message: Any) -> None:
        try:
            self.conn.send(message)  # small; the pipe buffers it
        except OSError:
            raise WorkerDied(WORKER_DIED) from None

    def _receive(self, abandon: Abandon, deadline: float, time_limit: float) -> Any:
        while True:
            try:
                gevent.socket.wait_read(self.conn.fileno(), POLL_INTERVAL, _Waiting)
                return self.conn.recv()  # readable: a whole small message is there (or EOF)
            except _Waiting:
                if abandon():
                    raise FileAbandoned("abandoned after a cancel") from None
                if time.monotonic() > deadline:
                    raise FileTimedOut(f"took longer than {time_limit:g} s (INGEST_FILE_TIME_LIMIT)") from None
            except (EOFError, OSError):
                raise WorkerDied(WORKER_DIED) from None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


class _Waiting(Exception):
    """No message within POLL_INTERVAL (gevent's ``wait_read`` timeout)."""


_pools: dict[tuple[int, int, float], WorkPool] = {}


def shared_pool(size: int, nice: int, time_limit: float) -> WorkPool:
    """This process's pool of ``size`` workers at ``nice`` with a per-file ``time_limit``
    (seconds), made on first request."""
    key = (max(1, size), nice, time_limit)
    if key not in _pools:
        _pools[key] = WorkPool(*key)
    return _pools[key]


def close_all() -> None:
    """Kill the worker processes of every shared pool (e.g. between benchmark runs)."""
    for pool in _pools.values():
        pool.close()


# --- in the worker process ----------------------------------------------------------------


def serve(conn: Connection, nice: int) -> None:
    """A worker process's main loop: lower the priority, import the stages and load the NSFW model
    (so the first file waits for neither), then run files until the pipe closes (the web process
    exited or closed the pool)."""
    from ingestapp.stages import STAGES, load, nsfw

    os.nice(nice)
    for stage in STAGES:
        load(stage)
    nsfw.load_model()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        conn.send(Started())  # the file's time limit counts from here
        conn.send(run_file(task, conn))


#: A file written to while its stages read it: one content, one hash, one thumbnail, or none.
CHANGED_WHILE_READ = "the file changed while it was being read: not recorded; ingest it again once it is complete"


def run_file(task: FileTask, conn: Connection) -> FileResult:
    """Wait the task's ``delay``, then run its stages in order until ``stops_after`` says so (an
    error, or a duplicate), sending a ``StageReport`` after each; return the file's result."""
    if task.delay:
        time.sleep(task.delay)  # a plain sleep: this process has no hub
    ctx = FileContext(
        task.path, task.relpath, task.parameters, task.thumbnail_dir,
        real_path=task.real_path, identity=task.identity, media_roots=task.media_roots,
    )
    reports: list[StageReport] = []
    try:
        for module in (importlib.import_module(name) for name in task.stages):
            started = time.perf_counter()
            try:
                module.run(ctx)
                message = CHANGED_WHILE_READ if ctx.changed_since_opened() else None
            except Exception as exc:
                message = error_message(exc, ctx.path_replacements(), task.media_roots)
            if message == CHANGED_WHILE_READ:
                from ingestapp.stages import thumbnail  # here: the web process imports this module

                thumbnail.discard(ctx)
            report = StageReport(module.NAME, message, time.perf_counter() - started)
            reports.append(report)
            conn.send(report)
            if stops_after(report, task, lambda: _ask_duplicate(conn, ctx.item["sha256"])):
                break
    finally:
        ctx.close()
    return FileResult(key=task.key, worker=worker_name(), stages=tuple(reports), sha256=ctx.item["sha256"],
                      item=ctx.item)


def _ask_duplicate(conn: Connection, sha256: str) -> bool:
    conn.send(Identified(sha256))
    return bool(conn.recv())


def error_message(exc: BaseException, replacements: dict[str, str], media_roots: Sequence[Path]) -> str:
    """A one-line, user-facing description of an exception (never a traceback), naming paths
    relative to their media root (``replacements``: see ``scrub_paths``) in display form."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError) and exc.strerror:
        return display_path(exc.strerror)  # without the absolute file name(s) OSError carries
    lines = str(exc).strip().replace("\r", "\n").split("\n")  # not splitlines: U+2028 may be in a name
    text = scrub_paths(lines[0], replacements, list(media_roots)) if lines[0] else type(exc).__name__
    return display_path(text)[:500]

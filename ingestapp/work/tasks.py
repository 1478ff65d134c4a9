"""The scale-out work tier's task engine: Celery on Redis (docs/work-tier.md says why Celery).

Two tasks, both run by ``flask --app ingestapp worker`` processes (``worker.py``):

- ``run_session(session_id)``: take a ``queued`` session (new, or resumed) and run its job in this
  process (``JobRegistry.take_queued``); the job sends its files out as ``run_files`` tasks
  (``remote.RemoteFiles``). A web process sends it (``JobRegistry.start`` / ``resume``).
- ``run_files(session_id, run_id, files)``: run a few files of a job on this process's work pool
  and send each file's result to the job (``remote.py``).

Delivery: late acknowledgement with ``task_reject_on_worker_lost``, so a task whose worker died
(SIGKILL, OOM, host lost) is delivered again once Redis's ``visibility_timeout``
(``INGEST_TASK_VISIBILITY_TIMEOUT``) has passed; each file's attempts are counted and a file whose
worker died ``MAX_ATTEMPTS`` times is reported as an error instead of being run again. A file's
time limit is the pool's (``INGEST_FILE_TIME_LIMIT``: the stage process is killed), not Celery's:
the gevent pool's time limit could only interrupt the waiting greenlet. Results go through Redis
to the job, never through a Celery result backend (none is configured).

The Celery app follows Flask's "Background Tasks with Celery" pattern: tasks run inside the app
context of the process's Flask app.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from celery import Celery, Task, shared_task
from flask import Flask, current_app
from redis.exceptions import RedisError

from ingestapp.core.ids import new_id
from ingestapp.work.pool import FileAbandoned, WorkerDied, WorkPool
from ingestapp.work.protocol import FileResult, FileTask, StageReport, worker_name
from ingestapp.work.remote import (
    ATTEMPTS_KEY,
    KEY_TTL,
    REPLY_KEY,
    REPLY_WAIT,
    RUN_KEY,
    send_message,
    send_result,
)

log = logging.getLogger(__name__)

QUEUE = "ingestapp"
#: Deliveries of a file whose worker died each time before it is reported as an error.
MAX_ATTEMPTS = 3
#: Seconds between a running task's checks that its run is still open (a cancel).
RUN_CHECK = 0.5


class FlaskTask(Task):
    """A task that runs in the app context of its Celery app's Flask app."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.app.flask_app.app_context():
            return self.run(*args, **kwargs)


def celery_init_app(app: Flask) -> Celery:
    """The Celery app of a Flask app with ``REDIS_URL`` (as ``app.extensions["celery"]``)."""
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.flask_app = app
    celery.config_from_object({
        "broker_url": app.config["REDIS_URL"],
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": app.config["TASK_VISIBILITY_TIMEOUT"],
            # Look for the unacknowledged tasks of dead workers on every poll, not every tenth.
            "unacked_restore_throttle": 1,
            # The lock a worker holds while it looks: a worker killed holding it would stop every
            # other from restoring anything until it expires (kombu's default: 300 s).
            "unacked_mutex_expire": min(60, app.config["TASK_VISIBILITY_TIMEOUT"]),
        },
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Two reserved tasks per slot. With one, once every reserved task runs, Celery's consumer for
        # the gevent pool (synloop) asks Redis again only when its 2 s drain_events timeout ends
        # (celery#7718): a slot idles up to 2 s per task. With two, the next task is already here
        # when a slot frees (the pool's spawn hands it over at once) and the fetch refills meanwhile.
        "worker_prefetch_multiplier": 2,
        # Nothing here uses Celery's remote control (cancels go through the job's own channels),
        # and its broadcast consumer adds a second to every shutdown.
        "worker_enable_remote_control": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    })
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def redis_client(url: str) -> Any:
    """The work tier's Redis client (results, answers, run keys, heartbeats); created after
    gevent's monkey-patching, like the bus's."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=30)


def send_session(session_id: str) -> None:
    """Queue a session for a worker to run (its row is ``queued`` with no lease owner)."""
    run_session.apply_async((session_id,), queue=QUEUE)


def send_files(session_id: str, run_id: str, files: list[dict[str, Any]]) -> None:
    """Queue a task of a few files of a job run (``remote.RemoteFiles``)."""
    run_files.apply_async((session_id, run_id, files), queue=QUEUE)


@shared_task(name="ingestapp.run_session")
def run_session(session_id: str) -> None:
    """Run a queued session's job in this worker (a no-op when another worker took it, or it was
    cancelled while queued)."""
    current_app.extensions["ingest_jobs"].take_queued(session_id)


class FilesTask(FlaskTask):
    """``run_files``: on a final failure (its retries spent), its files are reported as errors,
    so the job is never left waiting for them."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Celery's hook after the last retry: a ``died`` result for each of the task's files."""
        session_id, run_id, files = args
        redis = self.app.flask_app.extensions["ingest_redis"]
        for file in files:
            died = f"the work tier could not run it ({type(exc).__name__})"
            send_result(redis, session_id, run_id, FileResult(key=file["key"], worker=worker_name(), died=died))


@shared_task(name="ingestapp.run_files", base=FilesTask, bind=True, autoretry_for=(RedisError, OSError),
             max_retries=3, retry_backoff=True)
def run_files(self: Task, session_id: str, run_id: str, files: list[dict[str, Any]]) -> None:
    """Run a task's files (``FileTask.to_dict`` forms) one after another on this process's work
    pool, each only while its run is open, sending each file's result to the job as soon as it is done."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    redis = app.extensions["ingest_redis"]
    registry = app.extensions["ingest_jobs"]
    run_key = RUN_KEY.format(session_id=session_id)
    attempts_key = ATTEMPTS_KEY.format(run_id=run_id)
    for file in files:
        task = FileTask.from_dict(file, registry.thumbnail_dir, tuple(registry.media_roots))
        pipe = redis.pipeline(transaction=False)  # one round trip: is the run open, and count the attempt
        current, attempts, _ = pipe.get(run_key).hincrby(attempts_key, task.key, 1).expire(
            attempts_key, KEY_TTL).execute()
        if current != run_id.encode():
            return  # cancelled, finished, or its job died: the rest is not run
        if attempts > MAX_ATTEMPTS:
            result = FileResult(key=task.key, worker=worker_name(),
                                died=f"its worker stopped {MAX_ATTEMPTS} times while running it")
        else:
            try:
                result = _run_file(registry.pool, redis, session_id, run_id, task)
            except FileAbandoned:
                return  # the run was closed while the file ran: its job no longer waits for it
        send_result(redis, session_id, run_id, result)


def _run_file(pool: WorkPool, redis: Any, session_id: str, run_id: str, task: FileTask) -> FileResult:
    """One file on the pool: its result as this worker (``host:pid``) produced it, with ``died``
    set when its stage process died or ran past the time limit (the reports until then kept)."""
    reports: list[StageReport] = []
    identified: dict[str, str] = {}
    checked = [time.monotonic(), False]  # last run-key check, and whether the run was closed

    def is_duplicate(sha256: str) -> bool:
        identified["sha256"] = sha256
        token = new_id()
        send_message(redis, session_id, run_id,
                     {"kind": "identified", "key": task.key, "sha256": sha256, "reply": token})
        answer = redis.blpop([REPLY_KEY.format(token=token)], timeout=REPLY_WAIT)
        return answer is not None and answer[1] == b"1"

    def abandon() -> bool:
        if time.monotonic() - checked[0] > RUN_CHECK:
            checked[:] = [time.monotonic(), redis.get(RUN_KEY.format(session_id=session_id)) != run_id.encode()]
        return bool(checked[1])

    try:
        result = pool.run_file(task, reports.append, is_duplicate, abandon, session_id)
    except WorkerDied as exc:
        return FileResult(key=task.key, worker=worker_name(), stages=tuple(reports),
                          sha256=identified.get("sha256"), died=str(exc))
    return replace(result, worker=worker_name())

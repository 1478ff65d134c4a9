"""A job's files in the scale-out work tier: sent as Celery tasks of a few files, answered on Redis.

With ``REDIS_URL`` a job runs in a ``flask --app ingestapp worker`` process (``worker.py``), and
its files run on every such process, on any host: ``RemoteFiles`` gathers the files its job hands
it into tasks of ``INGEST_TASK_FILES`` (``tasks.run_files``) and waits for each file's result on
the run's Redis stream. A worker sends one message per file when it is done (a ``protocol.FileResult``:
every stage's report and the item fields, or why it died), and asks the job, after identify, whether the file is a
duplicate; the job answers on a list only that worker waits on. The job replays a result through
the same calls as a file of its local pool, so counting, events and the log are the same code.

Redis keys (all under ``ingestapp:``; ``<run>`` is a run's ``new_id``, one per job run):

- ``run:<session>`` (string): the id of the session's current run, expiring after the job's lease
  unless the job renews it (``renew``). Workers run a task's files only while it holds their run
  id: a cancel (``request_cancel`` overwrites it with ``CANCELLED``), the job's end or its
  process's death stops them before their next file. A renewal that comes too late (a busy host)
  finds the key gone while the job lives on: the job opens the run again and sends the files still
  unanswered once more, since workers dropped them without a word.
- ``work:<session>:<run>`` (stream): workers → job, one entry per message (``{"m": JSON}``): a
  file's ``result`` (``protocol.FileResult``) or an ``identified`` question; trimmed as the job
  reads it, deleted at the run's end, expires KEY_TTL after its last write.
- ``attempts:<run>`` (hash): file key → deliveries of its task (``tasks.MAX_ATTEMPTS``).
- ``reply:<token>`` (list): the job's answer (``"1"``/``"0"``) to one duplicate question.
- ``control:<session>`` (stream, 10 entries): web → job (``cancel``), heard at once rather than at
  the job's next commit.
- ``resumes:<session>`` (counter, a day): times the session was queued again by itself after its
  process died (``jobs.registry``: at most ``AUTO_RESUMES``).
- ``workers`` (sorted set): live workers, ``host:pid`` → last heartbeat (Unix seconds).

A task is delivered again when its worker died (Celery's late acks): the job records the first
result of each file and drops the others, so every file is recorded exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gevent
import gevent.event

from ingestapp.core.ids import new_id
from ingestapp.work.pool import POLL_INTERVAL, Abandon, FileAbandoned, IsDuplicate, OnStage, WorkerDied
from ingestapp.work.protocol import FileResult, FileTask, key_path, stops_after

log = logging.getLogger(__name__)

RUN_KEY = "ingestapp:run:{session_id}"
RESULTS_KEY = "ingestapp:work:{session_id}:{run_id}"
CONTROL_KEY = "ingestapp:control:{session_id}"
REPLY_KEY = "ingestapp:reply:{token}"
ATTEMPTS_KEY = "ingestapp:attempts:{run_id}"
RESUMES_KEY = "ingestapp:resumes:{session_id}"
WORKERS_KEY = "ingestapp:workers"
#: The run key's value once a cancel closed it: no run id, and a renewal does not open it again.
CANCELLED = b"cancelled"

#: Seconds a worker's heartbeat counts: a web process sends jobs to the work tier only while one
#: is this fresh (else the job runs in the web process's own pool, as without REDIS_URL).
WORKER_FRESH = 15
HEARTBEAT = 5
#: Seconds the first file of a task waits for more before the task is sent.
BATCH_WAIT = 0.02
#: Seconds a worker waits for the job's answer to a duplicate question (then it goes on).
REPLY_WAIT = 30
KEY_TTL = 3600  # seconds the results stream and answers outlive their last use


def workers_alive(redis: Any) -> int:
    """How many ``flask --app ingestapp worker`` processes sent a heartbeat lately."""
    return int(redis.zcount(WORKERS_KEY, time.time() - WORKER_FRESH, "+inf"))


def request_cancel(redis: Any, session_id: str) -> None:
    """Tell the session's job, wherever it runs, to stop now, and its workers to start no new file."""
    pipe = redis.pipeline(transaction=False)
    pipe.xadd(CONTROL_KEY.format(session_id=session_id), {"m": json.dumps({"kind": "cancel"})}, maxlen=10)
    pipe.expire(CONTROL_KEY.format(session_id=session_id), KEY_TTL)
    pipe.set(RUN_KEY.format(session_id=session_id), CANCELLED, ex=KEY_TTL)
    pipe.execute()


def send_message(redis: Any, session_id: str, run_id: str, message: dict[str, Any]) -> None:
    """Append a worker's message (``result`` or ``identified``) to a run's results stream."""
    key = RESULTS_KEY.format(session_id=session_id, run_id=run_id)
    redis.pipeline(transaction=False).xadd(key, {"m": json.dumps(message)}).expire(key, KEY_TTL).execute()


def send_result(redis: Any, session_id: str, run_id: str, result: FileResult) -> None:
    """Send a file's result to its job."""
    send_message(redis, session_id, run_id, {"kind": "result", "result": result.to_dict()})


class _Pending(NamedTuple):
    """A file sent to the work tier: its result once it arrives, and its task form (to send again)."""

    result: gevent.event.AsyncResult
    form: dict[str, Any]


#: Sends one task: (session id, run id, its files as ``FileTask.to_dict`` gives them).
SendFiles = Callable[[str, str, list[dict[str, Any]]], None]


class RemoteFiles:
    """One job run's files in the work tier (see the module docstring).

    ``is_duplicate(sha256, path)`` is the job's decision (the same answer for the same file every
    time it is asked); ``on_cancel()`` is called when a cancel arrives on the control stream.
    ``ttl``: seconds the run key lives unless ``renew`` is called (the job's lease).
    """

    def __init__(
        self, redis: Any, session_id: str, send: SendFiles, task_files: int, ttl: float,
        is_duplicate: Callable[[str, Path], bool], on_cancel: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.session_id = session_id
        self.run_id = new_id()
        self.send = send
        self.task_files = max(1, task_files)
        self.ttl = ttl
        self.is_duplicate = is_duplicate
        self.on_cancel = on_cancel
        self.run_key = RUN_KEY.format(session_id=session_id)
        self.results_key = RESULTS_KEY.format(session_id=session_id, run_id=self.run_id)
        self.control_key = CONTROL_KEY.format(session_id=session_id)
        self._waiting: dict[str, _Pending] = {}  # file key -> its result to come, and its task form
        self._batch: list[dict[str, Any]] = []
        self._reader: gevent.Greenlet | None = None
        self._renewed = 0.0

    def start(self) -> None:
        """Open the run (workers may take its files) and start reading results."""
        self.redis.set(self.run_key, self.run_id, px=int(self.ttl * 1000))
        self._renewed = time.monotonic()
        newest = self.redis.xrevrange(self.control_key, count=1)  # only cancels sent from now on
        self._reader = gevent.spawn(self._read, newest[0][0] if newest else "0-0")

    def renew(self) -> None:
        """Keep the run open for another ``ttl`` (at most every fifth of it). A cancelled run
        stays closed; one whose key expired before this renewal is opened again and its
        unanswered files sent again (the module docstring)."""
        if time.monotonic() - self._renewed <= self.ttl / 5:
            return
        self._renewed = time.monotonic()
        current = self.redis.get(self.run_key)
        if current == self.run_id.encode():
            self.redis.pexpire(self.run_key, int(self.ttl * 1000))
        elif current is None and self.redis.set(self.run_key, self.run_id, px=int(self.ttl * 1000), nx=True):
            files = [pending.form for pending in self._waiting.values() if not pending.result.ready()]
            log.warning("session %s: run %s lapsed on Redis before its renewal; open again, %d files sent again",
                        self.session_id, self.run_id, len(files))
            for start in range(0, len(files), self.task_files):
                self.send(self.session_id, self.run_id, files[start:start + self.task_files])

    def stop(self) -> None:
        """Close the run: workers drop its remaining files; its results stream is deleted."""
        if self._reader is not None:
            self._reader.kill()
        try:
            if self.redis.get(self.run_key) == self.run_id.encode():
                self.redis.delete(self.run_key)
            self.redis.delete(self.results_key, ATTEMPTS_KEY.format(run_id=self.run_id))
        except Exception:
            log.exception("session %s: closing run %s on Redis failed (its keys expire)", self.session_id, self.run_id)

    def run_file(
        self, task: FileTask, on_stage: OnStage, is_duplicate: IsDuplicate, abandon: Abandon, session_id: str
    ) -> FileResult:
        """Run ``task`` in the work tier; the same contract as ``WorkPool.run_file`` (``session_id``
        is this run's: the workers' pools share their processes by it, ``tasks.run_files``). The
        stage reports are replayed through ``on_stage`` when the file's result arrives, stopping
        where the stage process stopped (``protocol.stops_after``)."""
        try:
            waiter = self._add(task)
            while True:
                try:
                    result: FileResult = waiter.get(timeout=POLL_INTERVAL)
                    break
                except gevent.Timeout:
                    if abandon():
                        raise FileAbandoned("abandoned after a cancel") from None
        finally:
            self._waiting.pop(task.key, None)
        for report in result.stages:
            on_stage(report)
            if stops_after(report, task, lambda: is_duplicate(result.sha256)):  # type: ignore[arg-type]
                break
        if result.died is not None:
            raise WorkerDied(result.died, result.worker)
        return result

    # -- sending ------------------------------------------------------------------------------------

    def _add(self, task: FileTask) -> gevent.event.AsyncResult:
        """Add a file to the task being filled; the file that opens a task sends it once it is
        full or BATCH_WAIT later (in this greenlet, so a failing send fails the job). Returns
        where the file's result will be set."""
        pending = self._waiting[task.key] = _Pending(gevent.event.AsyncResult(), task.to_dict())
        batch = self._batch
        batch.append(pending.form)
        if len(batch) >= self.task_files:
            self._send(batch)
        elif len(batch) == 1:
            gevent.sleep(BATCH_WAIT)
            if self._batch is batch:
                self._send(batch)
        return pending.result

    def _send(self, batch: list[dict[str, Any]]) -> None:
        self._batch = []
        self.send(self.session_id, self.run_id, batch)

    # -- receiving ----------------------------------------------------------------------------------

    def _read(self, control_from: bytes | str) -> None:
        """The reader greenlet: results and control messages, in order, as they arrive; what was
        read is trimmed from the results stream."""
        last: dict[str, bytes | str] = {self.results_key: "0-0", self.control_key: control_from}
        while True:
            try:
                reply = self.redis.xread(last, count=200, block=1000)
                for stream, entries in reply or ():
                    for entry_id, fields in entries:
                        last[stream.decode()] = entry_id
                        self._handle(json.loads(fields[b"m"]))
                if reply:
                    self.redis.xtrim(self.results_key, minid=last[self.results_key])
            except Exception:  # Redis unreachable: the files wait; a cancel still reaches the job by SQL
                log.exception("session %s: reading the work tier's results failed; retrying", self.session_id)
                gevent.sleep(1)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "identified":
            answer = "1" if self.is_duplicate(message["sha256"], key_path(message["key"])) else "0"
            reply = REPLY_KEY.format(token=message["reply"])
            self.redis.pipeline(transaction=False).lpush(reply, answer).expire(reply, REPLY_WAIT).execute()
        elif kind == "cancel":
            self.on_cancel()
        else:  # "result": the first result of a file counts, a redelivered task's is dropped
            result = FileResult.from_dict(message["result"])
            pending = self._waiting.get(result.key)
            if pending is not None and not pending.result.ready():
                pending.result.set(result)

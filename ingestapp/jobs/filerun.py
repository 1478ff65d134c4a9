"""One file's way through its stages, as its job counts it.

The file enters its first stage when a worker greenlet of the job hands it to a stage process (of
this process's pool, or of the work tier: both report through ``work.protocol``); each
``StageReport`` is counted in the job's state as it arrives (an error is recorded at once) and the
file enters the next stage; the stages it does not reach (after an error, or a duplicate) are
counted as skipped. Last, the job records it as an item (``FileOwner.record_file``): every stage's
``processed`` then counts it exactly once. A file abandoned after a cancel is not recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ingestapp.core import metrics
from ingestapp.core.vocabulary import ItemStatus, StageName, StageStatus
from ingestapp.jobs.cancel import CancelFlag
from ingestapp.jobs.state import JobState, StageProgress
from ingestapp.stages.base import new_item_fields
from ingestapp.work.pool import Abandon, FileAbandoned, IsDuplicate, OnStage, WorkerDied
from ingestapp.work.protocol import FileResult, FileTask, StageReport

#: Seconds a cancelled job still waits for a file in a stage process before abandoning it (the
#: process is killed): cancel takes effect within about this, however long a file takes.
CANCEL_GRACE = 1.0


class FileRunner(Protocol):
    """Where a file's stages run: ``work.pool.WorkPool`` (shared round robin by ``session_id``) or
    ``work.remote.RemoteFiles``."""

    def run_file(self, task: FileTask, on_stage: OnStage, is_duplicate: IsDuplicate,
                 abandon: Abandon, session_id: str) -> FileResult: ...


@dataclass
class FileRecord:
    """A file done with its stages, to record as an item: where it is (``root``, ``relpath`` in
    ``os.fsdecode`` form, ``shown`` its display form), ``status``, the ``item`` fields, its
    ``errors`` (``{stage, message}``, in stage order) and the process that ran it (``host:pid``)."""

    root: Path
    relpath: str
    shown: str
    status: ItemStatus
    item: dict[str, Any]
    worker: str | None
    errors: list[dict[str, str]] = field(default_factory=list)


class FileOwner(Protocol):
    """What a file run needs of its job (``jobs.job.Job``)."""

    session_id: str
    state: JobState
    cancel: CancelFlag

    def is_duplicate(self, sha256: str, path: Path) -> bool: ...
    def emit_stage(self, name: str) -> None: ...
    def finish_stage(self, name: str) -> None: ...
    def record_error(self, file: str, stage: str, message: str) -> None: ...
    def record_file(self, record: FileRecord) -> None: ...


class FileRun:
    """One run of ``task`` (the file at ``root``/``relpath``, ``os.fsdecode`` form) through the
    stages ``names`` (import order), for ``job``; see the module docstring."""

    def __init__(self, job: FileOwner, task: FileTask, root: Path, relpath: str, names: list[str]) -> None:
        self.job = job
        self.task = task
        self.record = FileRecord(root, relpath, task.relpath, ItemStatus.OK, new_item_fields(), None)
        self.names = names  # the stages, in order
        self.reported = 0  # stages whose report arrived
        self._cancel_seen: float | None = None

    def run(self, runner: FileRunner) -> None:
        """Run the stages, count them and record the file. Raises what the runner raises, except
        WorkerDied (an error entry of the stage it died in) and FileAbandoned (not recorded)."""
        self._enter(self.names[0])
        try:
            result = runner.run_file(self.task, self.on_stage, self.is_duplicate, self.abandon, self.job.session_id)
            self.record.item, self.record.worker = result.item or self.record.item, result.worker
        except WorkerDied as exc:
            self.record.worker = exc.worker
            self._died(str(exc))
        except BaseException as exc:
            if self._in_stage():
                self._stage(self.names[self.reported]).in_flight -= 1  # abandoned: cancelled, or the job was killed
            if isinstance(exc, FileAbandoned):
                return  # not done: like a file still queued at the cancel
            raise
        for name in self.names[self.reported:]:
            self._stage(name).processed += 1  # not run for this file, but accounted for
            self._stage(name).skipped += 1
        self.job.record_file(self.record)

    def on_stage(self, report: StageReport) -> None:
        """A stage ran on the file for ``report.seconds`` (measured in the stage process)."""
        stage = self._stage(report.stage)
        stage.in_flight -= 1
        stage.processed += 1
        self.reported += 1
        metrics.STAGE_SECONDS.labels(report.stage).observe(report.seconds)
        metrics.FILES.labels(report.stage, ItemStatus.OK if report.message is None else ItemStatus.ERROR).inc()
        if report.message is not None:
            self._fail(report.stage, report.message)
        state = self.job.state
        if stage.processed == state.total_files and state.stages[StageName.SCANNING].status == StageStatus.COMPLETED:
            self.job.finish_stage(report.stage)
        if self._in_stage():
            self._enter(self.names[self.reported])

    def is_duplicate(self, sha256: str) -> bool:
        """Identify's answer: a duplicate's later stages do not run."""
        if not self.job.is_duplicate(sha256, self.task.path):
            return False
        if self._in_stage():
            self._stage(self.names[self.reported]).in_flight -= 1  # entered, but it will not run
        self.record.status = ItemStatus.SKIPPED
        return True

    def abandon(self) -> bool:
        """Give up on the file: CANCEL_GRACE after the job was cancelled."""
        if not self.job.cancel:
            return False
        self._cancel_seen = self._cancel_seen or time.monotonic()
        return time.monotonic() - self._cancel_seen > CANCEL_GRACE

    def _died(self, message: str) -> None:
        if self._in_stage():
            self.on_stage(StageReport(self.names[self.reported], message, 0.0))  # the stage it died in
        else:  # after its last stage (or a duplicate's answer), before the result: rare
            self._fail(self.names[-1], message)

    def _fail(self, name: str, message: str) -> None:
        self.record.status = ItemStatus.ERROR
        self.record.errors.append({"stage": name, "message": message})
        self._stage(name).errors += 1
        self.job.record_error(self.record.shown, name, message)

    def _in_stage(self) -> bool:
        """Whether the file is inside a stage (entered, not reported): it neither failed nor was a
        duplicate, and stages remain."""
        return self.record.status == ItemStatus.OK and self.reported < len(self.names)

    def _enter(self, name: str) -> None:
        stage = self._stage(name)
        if stage.start():
            self.job.emit_stage(name)
        stage.in_flight += 1

    def _stage(self, name: str) -> StageProgress:
        return self.job.state.stages[name]

"""A job's state: its counters (files, stages, stats, errors, timing) and the state JSON built from
them (README, "State"), restored exactly when a session resumes.

A ``Job`` has one :class:`JobState` (composition: the job runs, the state counts). Restoring reads
each saved field by name (``StageProgress.from_dict``, ``JobState.restore``), with what the items in
the database say (``Recorded``), so a resumed session counts each file once.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import (
    RUNNING_STATUSES,
    UNFINISHED_STAGE_STATUSES,
    ItemStatus,
    SessionStatus,
    StageName,
    StageStatus,
)

STATS_KEYS = (
    "processed_files",
    "metadata_extracted",
    "keywords_added",
    "scores_imported",
    "nsfw_detected",
    "skipped_duplicates",
    "errors",
)
ERRORS_KEPT = 50  # errors carried in the state; all are in the errors table


@dataclass
class StageProgress:
    """Progress of one stage; its total is the job's (see ``JobState.stage_dict``). ``processed``
    counts every file the stage is done with, ``skipped`` included."""

    status: StageStatus = StageStatus.PENDING
    processed: int = 0
    errors: int = 0
    in_flight: int = 0
    started: float | None = None  # time.monotonic()
    skipped: int = 0  # files this stage did not run for: an earlier stage failed, or a duplicate
    duration_ms: float = 0.0  # wall time of earlier runs (a resumed session adds to it)

    def start(self) -> bool:
        """Mark running; True when this changed the status."""
        if self.status != StageStatus.PENDING:
            return False
        self.status, self.started = StageStatus.RUNNING, time.monotonic()
        return True

    def finish(self) -> bool:
        """Mark completed; True when this changed the status."""
        if self.status == StageStatus.COMPLETED:
            return False
        self.duration_ms = self._duration_ms()
        self.status, self.started = StageStatus.COMPLETED, None
        return True

    def stop(self, status: StageStatus) -> bool:
        """Mark an unfinished stage with the session's final ``status`` (cancelled, failed or
        interrupted): a stopped session shows no stage as running. True when this changed it."""
        if self.status not in UNFINISHED_STAGE_STATUSES:
            return False
        self.duration_ms = self._duration_ms()
        self.status, self.started, self.in_flight = status, None, 0
        return True

    def _duration_ms(self) -> float:
        running = (time.monotonic() - self.started) * 1000 if self.started is not None else 0.0
        return round(self.duration_ms + running, 1)

    def to_dict(self, total: int | None) -> dict[str, Any]:
        """The stage's state entry; ``total`` is None while unknown (the scan is still running)."""
        percent = None
        if total:
            percent = round(min(100.0, self.processed * 100 / total), 2)
        elif self.status == StageStatus.COMPLETED:
            percent = 100.0
        return {
            "status": self.status,
            "processed": self.processed,
            "total": total,
            "errors": self.errors,
            "skipped": self.skipped,
            "in_flight": self.in_flight,
            "progress_percent": percent,
            "duration_ms": self._duration_ms(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], recorded: StageCount) -> StageProgress:
        """Restore a persisted stage for a resumed session, ready to run again: ``processed`` and
        ``errors`` as the recorded items say (the saved counters may include a file that was in
        flight when the process died: it runs again), ``skipped`` and ``duration_ms`` as saved."""
        return cls(
            status=StageStatus.PENDING,
            processed=recorded.processed,
            errors=recorded.errors,
            skipped=data.get("skipped", 0),
            duration_ms=data["duration_ms"],
        )


@dataclass(frozen=True)
class StageCount:
    """What the recorded items of a session say about one stage: files done with it (every item,
    as every file passes every stage once, run or skipped) and errors it reported."""

    processed: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Recorded:
    """What earlier runs of a session recorded, read when it resumes (``jobs.recorded``):
    ``stages`` by name, the error entries' count and the newest ERRORS_KEPT of them, oldest first."""

    stages: dict[str, StageCount]
    error_count: int
    recent_errors: list[dict[str, Any]]


def percent(done: int, total: int, status: str) -> float:
    """Overall progress in percent: exactly 100.0 once completed."""
    if status == SessionStatus.COMPLETED:
        return 100.0
    return round(min(99.99, done * 100 / total), 2) if total else 0.0


def stopped_state(state: dict[str, Any], status: SessionStatus) -> dict[str, Any]:
    """A persisted state as of a session that stopped with ``status`` without running code to
    say so (its process died, or it was cancelled while queued): unfinished stages take that
    status, nothing is in flight or queued, there is no ETA and no turn awaited. Returns a new
    dict; ``state`` is not changed."""
    stages = {
        name: {**stage, "status": status, "in_flight": 0}
        if stage["status"] in UNFINISHED_STAGE_STATUSES
        else stage
        for name, stage in state["stages"].items()
    }
    pool = {**state["worker_pool"], "active": 0, "queue_depth": 0}
    timing = {**state["timing"], "estimated_remaining_ms": None}
    return {**state, "status": status, "stages": stages, "worker_pool": pool, "timing": timing,
            "current_file": None, "awaits_turn": False}


def progress_of(state: dict[str, Any]) -> dict[str, Any]:
    """The changing part of a full state (``JobState.to_dict`` shape): what a ``progress`` event
    carries, as ``JobState.progress`` gives it."""
    return {k: v for k, v in state.items() if k not in ("session_id", "message", "parameters", "errors")}


@dataclass
class Timing:
    """A session's clock: ``started_at`` (Unix seconds) of its first run, the milliseconds its
    earlier runs took, and this run's start, end (``time.monotonic``) and files done."""

    started_at: float | None = None
    elapsed_before_ms: float = 0.0
    run_started: float = field(default_factory=time.monotonic)
    run_ended: float | None = None
    run_done: int = 0  # files done by this run (a resumed session's earlier runs not counted)

    def start_run(self) -> None:
        """A run starts now (the session's first sets ``started_at``)."""
        self.started_at = self.started_at or time.time()
        self.run_started = time.monotonic()

    def to_dict(self, total: int, done: int, running: bool) -> dict[str, Any]:
        """The state's ``timing`` (milliseconds, files per second) with ``done`` of ``total`` files;
        an ETA only while ``running``."""
        run_seconds = (self.run_ended or time.monotonic()) - self.run_started
        rate = self.run_done / run_seconds if run_seconds > 0 else 0.0
        remaining = total - done
        return {
            "started_at": self.started_at,
            "elapsed_ms": round(self.elapsed_before_ms + run_seconds * 1000),
            "files_per_s": round(rate, 2),
            "estimated_remaining_ms": round(remaining / rate * 1000) if running and rate else None,
        }


@dataclass
class JobState:
    """The counters of one session's job and the state JSON built from them.

    ``stage_names``: the stages the session runs (scanning first, then ``stages.enabled_stages``
    order); ``concurrency``: files the job processes at once (the worker pool's ``max``).
    """

    session_id: str
    parameters: IngestParameters
    stage_names: list[str]
    concurrency: int
    status: SessionStatus = SessionStatus.QUEUED
    failure: str | None = None  # why the job failed: the state's ``message``
    total_files: int = 0  # files the run processes: at most ``parameters.max_files``
    files_found: int = 0  # matching files the scan saw, those past ``max_files`` too
    current_file: str | None = None
    active: int = 0  # files taken off the queue and not recorded yet
    queued: int = 0  # files waiting in the job's queue
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATS_KEYS, 0))
    errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))
    stages: dict[str, StageProgress] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    watch: dict[str, Any] | None = None  # a watching session's ``watch`` (``jobs.watch``), else None

    def __post_init__(self) -> None:
        self.stages = self.stages or {name: StageProgress() for name in self.stage_names}

    def restore(self, saved: dict[str, Any], recorded: Recorded) -> None:
        """Continue from a persisted state (``saved``, as ``to_dict`` wrote it) and what the items
        say (``recorded``): the scan starts over, the other stages keep their counts and time."""
        self.stats.update(saved["stats"], errors=recorded.error_count)
        self.errors.extend(recorded.recent_errors)
        self.timing = Timing(started_at=saved["timing"]["started_at"],
                             elapsed_before_ms=saved["timing"]["elapsed_ms"])
        for name, data in saved["stages"].items():
            if name in self.stages and name != StageName.SCANNING:
                self.stages[name] = StageProgress.from_dict(data, recorded.stages.get(name, StageCount()))

    @property
    def done_files(self) -> int:
        """Files recorded as items: processed (ok or error) and skipped duplicates."""
        return self.stats["processed_files"] + self.stats["skipped_duplicates"]

    @property
    def running(self) -> bool:
        """Whether the status is a running one (queued, scanning, processing)."""
        return self.status in RUNNING_STATUSES

    def count_file(self, status: ItemStatus, item: dict[str, Any]) -> None:
        """A file was recorded with ``status`` and ``item`` fields: count it in the stats."""
        self.timing.run_done += 1
        if status == ItemStatus.SKIPPED:
            self.stats["skipped_duplicates"] += 1
            return
        self.stats["processed_files"] += 1
        if status != ItemStatus.OK:
            return
        self.stats["metadata_extracted"] += StageName.METADATA in self.stages
        self.stats["keywords_added"] += len(item["keywords"])
        self.stats["scores_imported"] += item["rating"] is not None or item["score"] is not None
        self.stats["nsfw_detected"] += bool(item["nsfw"])

    def add_error(self, entry: dict[str, Any]) -> None:
        """Count an error entry (``{file, stage, message, time}``) and keep it among the newest."""
        self.errors.append(entry)
        self.stats["errors"] += 1

    def to_dict(self, last_event_id: int) -> dict[str, Any]:
        """The status-endpoint JSON (see README, "State")."""
        return {
            "session_id": self.session_id,
            "status": self.status,
            "message": self.failure,
            "parameters": self.parameters.to_dict(),
            "errors": list(self.errors),
            **self.progress(last_event_id),
        }

    def progress(self, last_event_id: int) -> dict[str, Any]:
        """The changing part of the state: what a ``progress`` event carries. A stopped job has no
        worker busy and nothing queued, whatever its greenlets are still unwinding."""
        running = self.running
        pool = {"active": self.active if running else 0, "max": self.concurrency,
                "queue_depth": self.queued if running else 0}
        return {
            "status": self.status,
            "progress_percent": percent(self.done_files, self.total_files, self.status),
            "total_files": self.total_files,
            "files_found": self.files_found,
            "processed_files": self.stats["processed_files"],
            "current_file": self.current_file,
            "stages": {name: self.stage_dict(name) for name in self.stages},
            "stats": dict(self.stats),
            "worker_pool": pool,
            "timing": self.timing.to_dict(self.total_files, self.done_files, running),
            "last_event_id": last_event_id,
            "watch": self.watch,
            # A job that runs has had its turn; a session waiting for one has no job yet (its
            # state is written by ``jobs/turns.py``).
            "awaits_turn": False,
        }

    def stage_dict(self, name: str) -> dict[str, Any]:
        """A stage's state entry. Every stage's total is the number of files found; the scan's
        own total is unknown (None) until it completes."""
        stage = self.stages[name]
        unknown = name == StageName.SCANNING and stage.status != StageStatus.COMPLETED
        return stage.to_dict(None if unknown else self.total_files)

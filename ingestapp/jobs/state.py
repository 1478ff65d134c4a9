"""The counters of a running session and the state JSON built from them (the state model)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingestapp.core.vocabulary import RUNNING_STATUSES, UNFINISHED_STAGE_STATUSES

if TYPE_CHECKING:
    from ingestapp.core.parameters import IngestParameters

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
    """Progress of one stage; its total is the job's (see ``JobState.stage_dict``)."""

    status: str = "pending"  # pending | running | completed | cancelled | failed | interrupted
    processed: int = 0
    errors: int = 0
    in_flight: int = 0
    started: float | None = None  # time.monotonic()
    skipped: int = 0  # files this stage did not run for: an earlier stage failed, or a duplicate
    duration_ms: float = 0.0  # wall time of earlier runs (a resumed session adds to it)

    def start(self) -> bool:
        """Mark running; True when this changed the status."""
        if self.status != "pending":
            return False
        self.status, self.started = "running", time.monotonic()
        return True

    def finish(self) -> bool:
        """Mark completed; True when this changed the status."""
        if self.status == "completed":
            return False
        self.duration_ms = self._duration_ms()
        self.status, self.started = "completed", None
        return True

    def stop(self, status: str) -> bool:
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
        elif self.status == "completed":
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
    def from_dict(cls, data: dict[str, Any]) -> StageProgress:
        """Restore a persisted stage for a resumed session: its counts and time, ready to run again."""
        return cls("pending", data["processed"], data["errors"], 0, None, data["duration_ms"], data.get("skipped", 0))


def percent(done: int, total: int, status: str) -> float:
    """Overall progress in percent: exactly 100.0 once completed."""
    if status == "completed":
        return 100.0
    return round(min(99.99, done * 100 / total), 2) if total else 0.0


def stopped_state(state: dict[str, Any], status: str) -> dict[str, Any]:
    """A persisted state as of a session that stopped with ``status`` without running code to
    say so (its process died): unfinished stages take that status, nothing is in flight or
    queued, and there is no ETA. Returns a new dict; ``state`` is not changed."""
    stages = {
        name: {**stage, "status": status, "in_flight": 0}
        if stage["status"] in UNFINISHED_STAGE_STATUSES
        else stage
        for name, stage in state["stages"].items()
    }
    pool = {**state["worker_pool"], "active": 0, "queue_depth": 0}
    timing = {**state["timing"], "estimated_remaining_ms": None}
    return {**state, "status": status, "stages": stages, "worker_pool": pool, "timing": timing,
            "current_file": None}


class JobState:
    """The state model of a job (``jobs.Job`` inherits it): the state JSON built from the job's
    counters, which ``Job.__init__`` sets and the run updates, and their restoring on a resume."""

    concurrency: int  # files processed at once: the worker_pool's max
    session_id: str
    parameters: IngestParameters
    seq: int  # the last event's id
    status: str
    failure: str | None
    total_files: int
    files_found: int
    current_file: str | None
    active: int
    queued: int
    started_at: float | None  # time.time()
    run_started: float  # time.monotonic()
    run_ended: float | None  # time.monotonic()
    run_done: int  # files done by this run (a resumed session's earlier runs not counted)
    stats: dict[str, int]
    errors: deque[dict[str, Any]]
    stages: dict[str, StageProgress]
    _elapsed_before_ms: float

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
        """The changing part of the state: what a ``progress`` event carries. A stopped job has no
        worker busy and nothing queued, whatever its greenlets are still unwinding."""
        running = self.status in RUNNING_STATUSES
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

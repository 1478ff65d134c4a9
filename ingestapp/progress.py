"""The counters of a running session and the state JSON built from them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

STATS_KEYS = (
    "processed_files",
    "metadata_extracted",
    "keywords_added",
    "scores_imported",
    "nsfw_detected",
    "skipped_duplicates",
    "errors",
)


#: Stage statuses a stopped session replaces with its own final status.
UNFINISHED_STAGE_STATUSES = ("pending", "running")


@dataclass
class StageProgress:
    """Progress of one stage; its total is the job's (see ``Job.stage_dict``)."""

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

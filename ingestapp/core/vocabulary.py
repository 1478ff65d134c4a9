"""The shared vocabulary: session statuses, event types, stage names and their labels, option
flags. The server imports it, every template gets it (``vocabulary``, and ``labels`` for the human
names), and the scripts read it from the page (``window.Ingest.vocabulary``, base.html), so each
word is written once.
"""

from __future__ import annotations

from typing import Any

RUNNING_STATUSES = ("queued", "scanning", "processing")
#: Statuses after a terminal event; ``interrupted`` is neither running nor finished (resumable).
FINISHED_STATUSES = ("completed", "failed", "cancelled")
STATUSES = (*RUNNING_STATUSES, *FINISHED_STATUSES, "interrupted")
#: The event that ends a session's stream, by the status it leaves.
TERMINAL_EVENT_OF = {"completed": "complete", "cancelled": "cancelled", "failed": "failed"}
TERMINAL_EVENTS = tuple(TERMINAL_EVENT_OF.values())
#: The SSE ``event`` names a stream sends (WHATWG HTML §9.2); README, "Live progress".
EVENT_TYPES = ("snapshot", "progress", "stage", "file", "error", *TERMINAL_EVENTS)
#: Stage names in pipeline order (``scanning`` is the job's own; the rest are ``stages.*.NAME``).
STAGE_NAMES = ("scanning", "identify", "metadata", "keywords", "scores", "nsfw", "thumbnail")
#: The boolean ingest parameters (the form's checkboxes), all true by default.
OPTION_FLAGS = ("extract_metadata", "extract_keywords", "import_scores", "enable_nsfw_detection", "skip_duplicates")

#: Human names, shared by the templates and the scripts.
LABELS: dict[str, dict[str, str]] = {
    "status": {
        "queued": "Queued",
        "scanning": "Scanning",
        "processing": "Processing",
        "completed": "Completed",
        "failed": "Failed",
        "cancelled": "Cancelled",
        "interrupted": "Interrupted",
    },
    "stage": {
        "scanning": "Scanning",
        "identify": "Identify",
        "metadata": "Metadata",
        "keywords": "Keywords",
        "scores": "Scores",
        "nsfw": "NSFW",
        "thumbnail": "Thumbnails",
    },
    "stage_status": {
        "pending": "Pending",
        "running": "Running",
        "completed": "Done",
        "cancelled": "Cancelled",
        "failed": "Failed",
        "interrupted": "Interrupted",
    },
    "stats": {
        "processed_files": "Processed",
        "metadata_extracted": "Metadata",
        "keywords_added": "Keywords",
        "scores_imported": "Scores",
        "nsfw_detected": "NSFW",
        "skipped_duplicates": "Duplicates skipped",
        "errors": "Errors",
    },
}


def for_scripts() -> dict[str, Any]:
    """The vocabulary as the page hands it to the scripts (JSON)."""
    return {
        "running_statuses": RUNNING_STATUSES,
        "finished_statuses": FINISHED_STATUSES,
        "terminal_events": TERMINAL_EVENTS,
        "event_types": EVENT_TYPES,
        "stage_names": STAGE_NAMES,
        "option_flags": OPTION_FLAGS,
        "labels": LABELS,
    }

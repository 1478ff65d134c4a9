"""The shared vocabulary, each word defined once: session, stage and item statuses, event types,
stage names, parameter names and their human labels.

Every word is a member of a ``StrEnum``: it compares and serialises as its plain string (JSON, the
database, SSE ``event`` names), so the enums are used by name everywhere and the strings are
written only here. The templates get the vocabulary as ``vocabulary`` (and ``labels``), and the
scripts read it from the page (``window.Ingest.vocabulary``, base.html: ``for_scripts``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ingestapp.core.limits import KEYWORDS_SHOWN


class SessionStatus(StrEnum):
    """A session's ``status`` (README, "State")."""

    QUEUED = "queued"
    SCANNING = "scanning"
    PROCESSING = "processing"
    #: The scan is done and the job goes on ingesting each new or changed file of its directory
    #: (``parameters.watch``): live, not finished; it ends only when cancelled or when it fails.
    WATCHING = "watching"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Its process died or stopped mid-run: neither running nor finished, it can be resumed.
    INTERRUPTED = "interrupted"


class StageStatus(StrEnum):
    """A stage's ``status`` within a session's state."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ItemStatus(StrEnum):
    """An item's ``status``: processed (``ok``), an error entry (``error``), or a duplicate whose
    later stages did not run (``skipped``)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class EventType(StrEnum):
    """The SSE ``event`` names a stream sends (WHATWG HTML §9.2; README, "Live progress")."""

    SNAPSHOT = "snapshot"
    PROGRESS = "progress"
    STAGE = "stage"
    FILE = "file"
    ERROR = "error"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    FAILED = "failed"


class StageName(StrEnum):
    """Stage names in pipeline order (``scanning`` is the job's own; the rest are ``stages.*.NAME``)."""

    SCANNING = "scanning"
    IDENTIFY = "identify"
    METADATA = "metadata"
    KEYWORDS = "keywords"
    SCORES = "scores"
    NSFW = "nsfw"
    THUMBNAIL = "thumbnail"


class Parameter(StrEnum):
    """The ingest parameters' names (``core.parameters.IngestParameters``, the form, the CLI)."""

    DIRECTORY = "directory"
    PATTERN = "pattern"
    EXTRACT_METADATA = "extract_metadata"
    EXTRACT_KEYWORDS = "extract_keywords"
    IMPORT_SCORES = "import_scores"
    ENABLE_NSFW_DETECTION = "enable_nsfw_detection"
    NSFW_THRESHOLD = "nsfw_threshold"
    MAX_FILES = "max_files"
    SKIP_DUPLICATES = "skip_duplicates"
    WATCH = "watch"
    AUTO_IMPORT = "auto_import"


class PairImport(StrEnum):
    """What an import takes of each RAW+JPEG pair (``POST /api/ingest/<id>/commit`` ``pairs``)."""

    BOTH = "both"
    RAW = "raw"
    JPEG = "jpeg"


RUNNING_STATUSES = (SessionStatus.QUEUED, SessionStatus.SCANNING, SessionStatus.PROCESSING, SessionStatus.WATCHING)
#: The running statuses that take one of a user's turns (``INGEST_MAX_ACTIVE_SESSIONS_PER_USER``,
#: ``jobs/turns.py``): not ``watching``, which idles until a file arrives.
ACTIVE_STATUSES = (SessionStatus.QUEUED, SessionStatus.SCANNING, SessionStatus.PROCESSING)
#: Statuses after a terminal event; ``interrupted`` is neither running nor finished (resumable).
FINISHED_STATUSES = (SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED)
STATUSES = tuple(SessionStatus)
#: The event that ends a session's stream, by the status it leaves.
TERMINAL_EVENT_OF = {
    SessionStatus.COMPLETED: EventType.COMPLETE,
    SessionStatus.CANCELLED: EventType.CANCELLED,
    SessionStatus.FAILED: EventType.FAILED,
}
TERMINAL_EVENTS = tuple(TERMINAL_EVENT_OF.values())
EVENT_TYPES = tuple(EventType)
STAGE_NAMES = tuple(StageName)
#: The boolean ingest parameters (the form's checkboxes): true by default but the watch's two.
OPTION_FLAGS = (
    Parameter.EXTRACT_METADATA, Parameter.EXTRACT_KEYWORDS, Parameter.IMPORT_SCORES,
    Parameter.ENABLE_NSFW_DETECTION, Parameter.SKIP_DUPLICATES, Parameter.WATCH, Parameter.AUTO_IMPORT,
)
#: Stage statuses a stopped session replaces with its own final status.
UNFINISHED_STAGE_STATUSES = (StageStatus.PENDING, StageStatus.RUNNING)

#: Human names, shared by the templates and the scripts.
LABELS: dict[str, dict[str, str]] = {
    "status": {
        SessionStatus.QUEUED: "Queued",
        SessionStatus.SCANNING: "Scanning",
        SessionStatus.PROCESSING: "Processing",
        SessionStatus.WATCHING: "Watching",
        SessionStatus.COMPLETED: "Completed",
        SessionStatus.FAILED: "Failed",
        SessionStatus.CANCELLED: "Cancelled",
        SessionStatus.INTERRUPTED: "Interrupted",
    },
    "stage": {
        StageName.SCANNING: "Scanning",
        StageName.IDENTIFY: "Identify",
        StageName.METADATA: "Metadata",
        StageName.KEYWORDS: "Keywords",
        StageName.SCORES: "Scores",
        StageName.NSFW: "NSFW",
        StageName.THUMBNAIL: "Thumbnails",
    },
    "stage_status": {
        StageStatus.PENDING: "Pending",
        StageStatus.RUNNING: "Running",
        StageStatus.COMPLETED: "Done",
        StageStatus.CANCELLED: "Cancelled",
        StageStatus.FAILED: "Failed",
        StageStatus.INTERRUPTED: "Interrupted",
    },
    "item_status": {
        ItemStatus.OK: "New",
        ItemStatus.SKIPPED: "Duplicate, skipped",
        ItemStatus.ERROR: "Error",
    },
    "pairs": {
        PairImport.BOTH: "RAW and JPEG",
        PairImport.RAW: "RAW only",
        PairImport.JPEG: "JPEG only",
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


def _members(enum: type[StrEnum]) -> dict[str, str]:
    return {member.name: member.value for member in enum}


def for_scripts() -> dict[str, Any]:
    """The vocabulary as the page hands it to the scripts (JSON): each enum as ``{NAME: value}``
    (``vocabulary.session_status.INTERRUPTED``), the groups as lists, the labels, and the limits a
    page applies (``core.limits``)."""
    return {
        "session_status": _members(SessionStatus),
        "stage_status": _members(StageStatus),
        "item_status": _members(ItemStatus),
        "event_type": _members(EventType),
        "stage_name": _members(StageName),
        "parameter": _members(Parameter),
        "pair_import": _members(PairImport),
        "running_statuses": RUNNING_STATUSES,
        "finished_statuses": FINISHED_STATUSES,
        "terminal_events": TERMINAL_EVENTS,
        "event_types": EVENT_TYPES,
        "stage_names": STAGE_NAMES,
        "option_flags": OPTION_FLAGS,
        "labels": LABELS,
        "limits": {"keywords_shown": KEYWORDS_SHOWN},
    }

"""The API's request and response shapes, and the SSE event shapes, as Pydantic v2 models.

One place for the contract: ``contract.py`` builds the OpenAPI 3.1 document from these models
(through spectree), the API validates query strings and JSON bodies with them, and the tests
validate real responses and every emitted event against them.

Request models are strict (no type coercion beyond what a query string needs: it is text).
Response models accept fields they do not name (JSON Schema ``additionalProperties`` open), so a
field added later does not break a client generated from an older document.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, RootModel, Tag
from pydantic.json_schema import SkipJsonSchema

from ingestapp.catalog.service import CATALOG_SORTS, REVIEW_VIEWS
from ingestapp.core.parameters import DEFAULT_PATTERN
from ingestapp.core.vocabulary import PairImport

#: The largest offset SQLite (and PostgreSQL) accept: a signed 64-bit integer.
INT64_MAX = 2**63 - 1

ReviewView = Literal[REVIEW_VIEWS]
PairChoice = Literal[tuple(choice.value for choice in PairImport)]
CatalogSort = Literal[tuple(CATALOG_SORTS)]
SessionStatus = Literal["queued", "scanning", "processing", "completed", "failed", "cancelled", "interrupted"]
ItemStatus = Literal["ok", "error", "skipped"]


# -- errors ---------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error answer under ``/api``: a message for people and the offending field (or null)."""

    error: str = Field(description="what is wrong, in words")
    field: str | None = Field(description="the query, body or header field at fault; null for the request")


# -- requests -------------------------------------------------------------------------------------


def _query_integer(value: Any) -> Any:
    """A query-string integer is ASCII digits with an optional minus (``int()`` alone would also
    take ``1_000``, `` 1`` or Arabic-Indic digits, which the documented ``integer`` type does not)."""
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise ValueError("must be an integer")
    return value


QueryInt = Annotated[int, BeforeValidator(_query_integer)]


def _optional(description: str) -> Any:
    """An optional query parameter: absent means "no filter" (None), with no ``default: null`` in
    the schema, as a query string has no null."""
    return Field(None, description=description, json_schema_extra=lambda schema: schema.pop("default", None))


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SessionsQuery(_Query):
    limit: QueryInt = Field(50, ge=1, le=500, description="how many sessions, newest first")


class PageQuery(_Query):
    offset: QueryInt = Field(0, ge=0, le=INT64_MAX, description="items to skip")
    limit: QueryInt = Field(50, ge=1, le=500, description="items to return")


class ItemsQuery(PageQuery):
    view: ReviewView = Field("all", description="all, new (ok), duplicates (skipped), errors, nsfw")


class CatalogQuery(PageQuery):
    """Catalog search; every given filter must match (more filters may be added)."""

    q: str | SkipJsonSchema[None] = _optional(
        "words matched, ignoring case, as substrings or prefixes of the path, keywords, camera make and model, lens"
    )
    keyword: str | SkipJsonSchema[None] = _optional("entries having this keyword (ignoring case)")
    min_rating: Annotated[int, Field(ge=-1, le=5), BeforeValidator(_query_integer)] | SkipJsonSchema[None] = (
        _optional("entries rated at least this")
    )
    nsfw: Literal["true", "false"] | SkipJsonSchema[None] = _optional("only NSFW, or only safe")
    has_gps: Literal["true", "false"] | SkipJsonSchema[None] = _optional("only with, or only without, GPS")
    media_type: Literal["image", "video"] | SkipJsonSchema[None] = _optional("only images, or only videos")
    taken_from: datetime.date | SkipJsonSchema[None] = _optional("taken on or after this date (YYYY-MM-DD)")
    taken_to: datetime.date | SkipJsonSchema[None] = _optional("taken on or before this date (YYYY-MM-DD)")
    sort: CatalogSort = Field("added", description="newest or highest first: added, taken, rating, score")


class KeywordsQuery(_Query):
    prefix: str = Field("", max_length=100, description="what the keyword starts with (ignoring case)")


class BrowseQuery(_Query):
    path: str = Field(pattern="^/", description="an absolute directory path inside a media root")


class MetricsQuery(_Query):
    greenlets: Literal["0", "1"] = Field("0", description="1: add the live greenlet count (walks the heap: slow)")


class StreamQuery(_Query):
    last_event_id: str | SkipJsonSchema[None] = _optional(
        "the same as the Last-Event-ID header, for clients that cannot set headers"
    )


class IngestParametersIn(BaseModel):
    """What a session does (``parameters.py`` then checks the directory and the pattern)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="IngestParameters")

    # The pattern is documented, not applied here: a name byte that is not UTF-8 arrives as a PEP 383
    # surrogate escape, which pydantic's regex engine cannot read; parameters.py checks it.
    directory: str = Field(
        description="absolute directory inside a media root (symlinks resolved)", json_schema_extra={"pattern": "^/"}
    )
    pattern: str = Field(DEFAULT_PATTERN, description="comma-separated globs relative to directory; ** spans dirs")
    extract_metadata: bool = True
    extract_keywords: bool = True
    import_scores: bool = True
    enable_nsfw_detection: bool = True
    nsfw_threshold: float = Field(0.7, ge=0.0, le=1.0, allow_inf_nan=False)
    max_files: Annotated[int, Field(ge=1)] | None = None
    skip_duplicates: bool = True


class WrappedParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    parameters: IngestParametersIn


def _process_form(body: Any) -> str:
    """Which form a process body takes: ``{"parameters": {...}}`` or the flat parameters."""
    return "wrapped" if isinstance(body, dict) and set(body) == {"parameters"} else "flat"


class ProcessRequest(RootModel):
    """``POST /api/ingest/process``: the parameters, flat or as ``{"parameters": {...}}``."""

    root: Annotated[
        Annotated[IngestParametersIn, Tag("flat")] | Annotated[WrappedParameters, Tag("wrapped")],
        Discriminator(_process_form),
    ]


class NoBody(BaseModel):
    """An empty JSON object (or no body at all)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CommitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    exclude: list[str] | None = Field(
        None, description="item ids to leave out of the catalog; replaces the stored exclusions (absent: keep them)"
    )
    pairs: PairChoice = Field(
        PairImport.BOTH.value,
        description="what to import of each RAW+JPEG pair (both items imported): both, raw or jpeg",
    )


# -- responses: sessions and state ----------------------------------------------------------------


class SessionUrls(BaseModel):
    session_id: str = Field(description="128 random bits, URL-safe base64")
    status_url: str
    stream_url: str


class IngestParametersOut(BaseModel):
    directory: str
    pattern: str
    extract_metadata: bool
    extract_keywords: bool
    import_scores: bool
    enable_nsfw_detection: bool
    nsfw_threshold: float
    max_files: int | None
    skip_duplicates: bool


class StageState(BaseModel):
    status: Literal["pending", "running", "completed", "cancelled", "failed", "interrupted"] = Field(
        description="a stopped session's final status replaces pending and running"
    )
    processed: int
    skipped: int = Field(description="files this stage did not run for: an earlier stage failed, or a duplicate")
    total: int | None = Field(description="the files found; null while the scan is running")
    errors: int
    in_flight: int
    progress_percent: float | None
    duration_ms: float


class Stats(BaseModel):
    processed_files: int
    metadata_extracted: int
    keywords_added: int
    scores_imported: int
    nsfw_detected: int
    skipped_duplicates: int
    errors: int


class WorkerPool(BaseModel):
    active: int
    max: int
    queue_depth: int


class Timing(BaseModel):
    started_at: float | None = Field(description="Unix time, seconds")
    elapsed_ms: float
    files_per_s: float
    estimated_remaining_ms: float | None


class ErrorEntry(BaseModel):
    file: str = Field(description="path relative to its media root")
    stage: str
    message: str
    time: float = Field(description="Unix time, seconds")


class Progress(BaseModel):
    """The changing part of a session's state (what a ``progress`` event carries)."""

    status: SessionStatus
    progress_percent: float = Field(description="exactly 100.0 once completed")
    total_files: int
    processed_files: int
    current_file: str | None
    stages: dict[str, StageState]
    stats: Stats
    worker_pool: WorkerPool
    timing: Timing
    last_event_id: int = Field(description="the seq of the last event; the SSE id")


class State(Progress):
    """``GET /api/ingest/status/<id>``: the full state of a session."""

    session_id: str
    message: str | None = Field(description="why the job failed, else null")
    parameters: IngestParametersOut
    errors: list[ErrorEntry] = Field(description="the latest 50")


class CommitResult(BaseModel):
    added: int
    updated: int
    excluded: int


class SessionSummary(BaseModel):
    session_id: str
    status: SessionStatus
    created_at: float
    committed_at: float | None
    commit_result: CommitResult | None = Field(description="what the last import did")
    directory: str
    total_files: int
    processed_files: int
    progress_percent: float
    errors: int


class SessionList(BaseModel):
    sessions: list[SessionSummary]


# -- responses: items, catalog, commit ------------------------------------------------------------


class Gps(BaseModel):
    latitude: float | None = Field(description="decimal degrees")
    longitude: float | None = Field(description="decimal degrees")
    altitude_m: float | None


class MediaMetadata(BaseModel):
    make: str | None
    model: str | None
    lens_model: str | None
    datetime_original: str | None = Field(description="ISO 8601, with the offset when known")
    exposure_time_s: float | None
    f_number: float | None
    iso: int | None
    focal_length_mm: float | None
    orientation: int | None = Field(description="EXIF orientation, 1 to 8")
    gps: Gps | None
    duration_s: float | None
    video_codec: str | None
    fps: float | None


class MediaFields(BaseModel):
    """What the stages extract from one file (null where a stage did not run or found nothing)."""

    path: str = Field(description="relative to its media root")
    size_bytes: int | None
    mime_type: str | None
    sha256: str | None
    width: int | None
    height: int | None
    metadata: MediaMetadata
    keywords: list[str]
    rating: int | None = Field(description="-1 to 5")
    score: float | None
    score_source: Literal["json", "csv"] | None
    nsfw_score: float | None = Field(description="0 to 1")
    nsfw: bool | None
    thumbnail_url: str | None


class FileError(BaseModel):
    stage: str
    message: str


class Item(MediaFields):
    id: str
    status: ItemStatus
    errors: list[FileError]
    excluded: bool = Field(description="left out of the import (kept with the session)")
    worker: str | None = Field(description="the work-tier process that ran the file's stages, host:pid: a pool "
                               "process of the web server, or a `flask --app ingestapp worker` process with "
                               "REDIS_URL; null for items of releases that did not record it")
    pair_id: str | None = Field(None, description="the other item of a RAW+JPEG pair (same directory and base "
                                "name, any case), else null")


class ItemPage(BaseModel):
    items: list[Item]
    total: int


class ImportRecord(CommitResult):
    at: float = Field(description="Unix time, seconds")


class Review(BaseModel):
    """The review step of a finished session."""

    counts: dict[ReviewView, int] = Field(description="items in each view")
    pairs: int = Field(0, description="RAW+JPEG pairs among the items")
    excluded: int = Field(description="ok items left out of the import")
    import_count: int = Field(description="what Import writes: the ok items not excluded")
    imported: ImportRecord | None = Field(description="the last import, or null")
    import_offered: bool = Field(description="no import yet, or the exclusions changed since the last one")


class ExcludeByIds(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    excluded: bool = Field(description="true: leave out of the import; false: include again")
    ids: list[str] = Field(description="item ids")


class ExcludeByView(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    excluded: bool = Field(description="true: leave out of the import; false: include again")
    view: ReviewView = Field(description="every ok item of this review filter")


def _exclusions_form(body: Any) -> str:
    return "view" if isinstance(body, dict) and "view" in body else "ids"


class ExclusionsRequest(RootModel):
    """Exclude items from the import, or include them again: by ``ids`` or by ``view``."""

    root: Annotated[
        Annotated[ExcludeByIds, Tag("ids")] | Annotated[ExcludeByView, Tag("view")],
        Discriminator(_exclusions_form),
    ]


class KeywordList(BaseModel):
    keywords: list[str] = Field(description="up to 10, most used first")


class CatalogEntry(MediaFields):
    id: str
    committed_at: float = Field(description="Unix time, seconds")


class CatalogPage(BaseModel):
    items: list[CatalogEntry]
    total: int


# -- responses: directory picker, metrics ---------------------------------------------------------


class Root(BaseModel):
    name: str
    path: str


class RootList(BaseModel):
    roots: list[Root]


class Directory(BaseModel):
    name: str = Field(description="display form: bytes that are not UTF-8 shown as \\xNN")
    path: str
    media_count: int | None = Field(description="media files directly inside; null when unreadable")


class Listing(BaseModel):
    path: str
    parent: str | None = Field(description="null at a media root")
    directories: list[Directory]


class Metrics(BaseModel):
    """Stream counters and event bus of this worker process (``GET /metrics`` sums the workers)."""

    scope: Literal["worker"] = Field(description="the figures are this worker's, not summed")
    pid: int = Field(description="the worker's process id")
    open_streams: int
    open_streams_by_session: dict[str, int]
    queued_events: int
    events_emitted: int
    events_delivered: int
    events_conflated: int
    events_replayed: int
    disconnects: int
    slow_client_drops: int = Field(0, description="streams closed because a write could not complete in time")
    bus: Literal["local", "redis"] = Field(description="local: in-process (one worker); redis: Redis Streams")
    bus_up: bool = Field(description="false while this worker's bus is disconnected from Redis")
    bus_reconnects: int | None = Field(None, description="Redis bus only: reconnections after an outage")
    bus_outbox: int | None = Field(None, description="Redis bus only: events waiting to be sent to Redis")
    greenlets: int | None = Field(None, description="with ?greenlets=1 only")


# -- Server-Sent Events (the ``data`` of each event type) ------------------------------------------


class EventEnvelope(BaseModel):
    """Fields every event but ``snapshot`` carries."""

    seq: int = Field(description="per-session, strictly increasing from 1; also the SSE id")
    emitted_at: float = Field(description="Unix time, seconds")
    session_id: str


class SnapshotEvent(State):
    """``event: snapshot``: the full state, first on a new stream (its id is ``last_event_id``)."""

    reset: bool = Field(description="true when the Last-Event-ID sent was unknown")


class ProgressEvent(EventEnvelope, Progress):
    """``event: progress``: at most 20 a second, and one when a session becomes interrupted."""

    type: Literal["progress"]


class StageEvent(EventEnvelope, StageState):
    """``event: stage``: a stage started or finished."""

    type: Literal["stage"]
    stage: str


class FileEvent(EventEnvelope):
    """``event: file``: one per file, once its stages ran."""

    type: Literal["file"]
    item_id: str
    path: str
    status: ItemStatus
    error: FileError | None = Field(description="the first error of this file")


class ErrorEvent(EventEnvelope, ErrorEntry):
    """``event: error``: a file (or a directory while scanning) could not be handled; the job goes on."""

    type: Literal["error"]


class _TerminalEvent(EventEnvelope, Progress):
    message: str | None


class CompleteEvent(_TerminalEvent):
    """``event: complete`` (terminal): the response ends after it."""

    type: Literal["complete"]


class CancelledEvent(_TerminalEvent):
    """``event: cancelled`` (terminal)."""

    type: Literal["cancelled"]


class FailedEvent(_TerminalEvent):
    """``event: failed`` (terminal), with ``message``."""

    type: Literal["failed"]


#: Every field name a request model has (to name the field of a validation error).
REQUEST_FIELDS = frozenset(
    name
    for model in (SessionsQuery, ItemsQuery, CatalogQuery, KeywordsQuery, BrowseQuery, MetricsQuery, StreamQuery,
                  IngestParametersIn, WrappedParameters, CommitRequest, ExcludeByIds, ExcludeByView)
    for name in model.model_fields
)

#: The ``data`` model of each SSE ``event`` type.
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "snapshot": SnapshotEvent,
    "progress": ProgressEvent,
    "stage": StageEvent,
    "file": FileEvent,
    "error": ErrorEvent,
    "complete": CompleteEvent,
    "cancelled": CancelledEvent,
    "failed": FailedEvent,
}

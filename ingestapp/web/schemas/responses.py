"""Response models: what the API's routes answer (``contract.py`` documents them; the tests
validate real responses against them). They accept fields they do not name (JSON Schema
``additionalProperties`` open), so a field added later does not break a client generated from an
older document.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ingestapp.core.limits import KEYWORDS_SHOWN
from ingestapp.core.vocabulary import ItemStatus, SessionStatus, StageStatus
from ingestapp.web.schemas.requests import ReviewView

# -- errors ---------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error answer under ``/api``: a message for people and the offending field (or null)."""

    error: str = Field(description="what is wrong, in words")
    field: str | None = Field(description="the query, body or header field at fault; null for the request")


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
    watch: bool = False
    auto_import: bool = False


class StageStateOut(BaseModel):
    status: StageStatus = Field(
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


class ErrorEntryOut(BaseModel):
    file: str = Field(description="path relative to its media root")
    stage: str
    message: str
    time: float = Field(description="Unix time, seconds")


class CommitResult(BaseModel):
    added: int
    updated: int
    excluded: int


class WatchState(BaseModel):
    """A watching session's watch (``jobs.watch``)."""

    mode: Literal["inotify", "polling"] = Field(description="polling: inotify could not watch the tree")
    warning: str | None = Field(description="why the watch polls, in words")
    last_file_at: float | None = Field(description="Unix time (seconds) of the last file ingested by the watch")
    imported: CommitResult | None = Field(description="with auto_import: what the imports so far did")


class Progress(BaseModel):
    """The changing part of a session's state (what a ``progress`` event carries)."""

    status: SessionStatus
    progress_percent: float = Field(description="exactly 100.0 once completed")
    total_files: int
    files_found: int = Field(0, description="matching files the scan saw, those past max_files too")
    processed_files: int
    current_file: str | None
    stages: dict[str, StageStateOut]
    stats: Stats
    worker_pool: WorkerPool
    timing: Timing
    last_event_id: int = Field(description="the seq of the last event; the SSE id")
    watch: WatchState | None = Field(None, description="null unless the session watches its directory")
    awaits_turn: bool = Field(False, description="true while the session is queued for its turn: its user "
                              "runs INGEST_MAX_ACTIVE_SESSIONS_PER_USER sessions already")


class State(Progress):
    """``GET /api/ingest/status/<id>``: the full state of a session."""

    session_id: str
    message: str | None = Field(description="why the job failed, else null")
    parameters: IngestParametersOut
    errors: list[ErrorEntryOut] = Field(description="the latest 50")


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
    phash: str | None = Field(None, description="perceptual hash, 16 hex digits (null: not hashed)")
    sharpness: float | None = Field(None, description="variance of the Laplacian of the small preview")
    warnings: list[str] = Field([], description="what the stages kept short of the file, in words: a cap it hit "
                                "(e.g. \"kept 500 of 400,000 keywords\"); the item is still ok")


class FileError(BaseModel):
    stage: str
    message: str


class ItemOut(MediaFields):
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
    items: list[ItemOut]
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


class SimilarGroup(BaseModel):
    item_ids: list[str] = Field(description="the session's ok items that show the same picture, by path")
    keep: str = Field(description="the suggested keeper: most pixels, then sharpest, then largest file")
    exclude: list[str] = Field(description='what "keep the best" leaves out: the others, except items of a '
                               "RAW+JPEG pair")
    catalog_ids: list[str] = Field(description="catalog entries showing the same picture")


class SimilarGroups(BaseModel):
    """Groups of two or more items, or of one item that matches catalog entries; within
    ``INGEST_SIMILAR_DISTANCE`` bits of perceptual hash (docs/similar.md)."""

    groups: list[SimilarGroup]


class KeywordList(BaseModel):
    keywords: list[str] = Field(description="up to 10, most used first")


class CatalogEntryOut(MediaFields):
    id: str
    keywords: list[str] = Field(description=f"its first {KEYWORDS_SHOWN} keywords, so a page stays small")
    keyword_count: int = Field(description="how many keywords the entry has; the keyword filter finds it by any")
    committed_at: float = Field(description="Unix time, seconds")


class CatalogPage(BaseModel):
    items: list[CatalogEntryOut]
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

"""The ``data`` of each Server-Sent Event type (README, "Live progress"): ``EVENT_MODELS``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ingestapp.core.vocabulary import EventType, ItemStatus
from ingestapp.web.schemas.responses import ErrorEntryOut, FileError, Progress, StageStateOut, State


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

    type: Literal[EventType.PROGRESS]


class StageEvent(EventEnvelope, StageStateOut):
    """``event: stage``: a stage started or finished."""

    type: Literal[EventType.STAGE]
    stage: str


class FileEvent(EventEnvelope):
    """``event: file``: one per file, once its stages ran."""

    type: Literal[EventType.FILE]
    item_id: str
    path: str
    status: ItemStatus
    error: FileError | None = Field(description="the first error of this file")


class ErrorEvent(EventEnvelope, ErrorEntryOut):
    """``event: error``: a file (or a directory while scanning) could not be handled; the job goes on."""

    type: Literal[EventType.ERROR]


class _TerminalEvent(EventEnvelope, Progress):
    message: str | None


class CompleteEvent(_TerminalEvent):
    """``event: complete`` (terminal): the response ends after it."""

    type: Literal[EventType.COMPLETE]


class CancelledEvent(_TerminalEvent):
    """``event: cancelled`` (terminal)."""

    type: Literal[EventType.CANCELLED]


class FailedEvent(_TerminalEvent):
    """``event: failed`` (terminal), with ``message``."""

    type: Literal[EventType.FAILED]


#: The ``data`` model of each SSE ``event`` type.
EVENT_MODELS: dict[str, type[BaseModel]] = {
    EventType.SNAPSHOT: SnapshotEvent,
    EventType.PROGRESS: ProgressEvent,
    EventType.STAGE: StageEvent,
    EventType.FILE: FileEvent,
    EventType.ERROR: ErrorEvent,
    EventType.COMPLETE: CompleteEvent,
    EventType.CANCELLED: CancelledEvent,
    EventType.FAILED: FailedEvent,
}

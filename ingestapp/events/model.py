"""Where an event is born: the ``job-event`` blinker signal and the ``Event`` it carries.

An event is built here (``make_event``) and stored and published by the event log (``log.py``:
``SessionLog`` for a running job, ``record`` for a session no job runs), from the gevent hub
thread, only once committed; through the bus (``bus.py``) it arrives in each worker as
``job_event.send(session_id, event=Event)``. Receivers: the stream broker (``broker.py``, SSE
fan-out) and the CLI progress bar (``cli/commands.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blinker import Namespace

from ingestapp.core.metrics import EVENTS_EMITTED
from ingestapp.core.vocabulary import TERMINAL_EVENTS, EventType

signals = Namespace()

#: sender: the session id (str); keyword ``event``: an :class:`Event`.
job_event = signals.signal("job-event")

TERMINAL_TYPES = frozenset(TERMINAL_EVENTS)
#: Types a slow subscriber may skip when a newer one of the same key is already queued.
CONFLATABLE_TYPES = frozenset({EventType.PROGRESS, EventType.STAGE})


@dataclass(frozen=True, slots=True)
class Event:
    """One published event.

    Attributes:
        session_id: the session it belongs to.
        seq: per-session sequence number; strictly increasing, starts at 1. Sent as the SSE ``id``.
        type: progress | stage | file | error | complete | cancelled | failed (the SSE ``event``).
        data: the one-line JSON of the event, ``{"seq", "type", "emitted_at", "session_id", ...}``.
        frame: the whole SSE frame (``id``/``event``/``data`` lines and the blank line), UTF-8,
            serialized once and shared by every subscriber (WHATWG HTML §9.2.6).
    """

    session_id: str
    seq: int
    type: str
    data: str
    frame: bytes = field(repr=False)
    #: Events with equal keys supersede each other in a slow subscriber's queue; None: never.
    conflation_key: str | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


def sse_frame(data: str, event_type: str | None = None, event_id: int | None = None) -> bytes:
    """Format one SSE event. ``data`` must be a single line (JSON from ``json.dumps`` is: it
    escapes CR and LF), so no field value can break the framing (WHATWG HTML §9.2.6)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}\n")
    if event_type is not None:
        lines.append(f"event: {event_type}\n")
    lines.append(f"data: {data}\n\n")
    return "".join(lines).encode()


def make_event(session_id: str, seq: int, event_type: str, fields: dict[str, Any]) -> Event:
    """Build an event stamped with ``seq`` and ``emitted_at`` (Unix time, seconds)."""
    body = {"seq": seq, "type": event_type, "emitted_at": time.time(), "session_id": session_id, **fields}
    return from_record(session_id, seq, event_type, json.dumps(body, separators=(",", ":")))


def from_record(session_id: str, seq: int, event_type: str, data: str) -> Event:
    """Rebuild an event from its persisted row (replay)."""
    key = None
    if event_type == EventType.STAGE:
        key = f"{EventType.STAGE}:{json.loads(data)['stage']}"
    elif event_type in CONFLATABLE_TYPES:
        key = event_type
    return Event(session_id, seq, event_type, data, sse_frame(data, event_type, seq), key)


#: Where ``publish`` hands events: None for this process's signal (the local bus), else the Redis
#: bus's ``publish``, which brings every event back to each worker's ``deliver`` (``bus.py``).
_transport: Callable[[Event], None] | None = None


def set_transport(transport: Callable[[Event], None] | None) -> None:
    global _transport
    _transport = transport


def publish(event: Event) -> None:
    """Announce ``event`` to every receiver, in every worker when the Redis bus is on. Call from
    the hub thread only; never blocks."""
    EVENTS_EMITTED.inc()
    if _transport is None:
        deliver(event)
    else:
        _transport(event)


def deliver(event: Event) -> None:
    """Send ``event`` to this process's receivers (the ``job_event`` signal). Hub thread only."""
    job_event.send(event.session_id, event=event)

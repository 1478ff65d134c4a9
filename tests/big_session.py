"""A finished session of many ``ok`` items, written straight into the database (no files, no job):
for the commit's hub-lag test and bench/commit_bench.py, which need 50,000 items in seconds."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import Engine

from ingestapp.core.ids import new_id
from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import ItemStatus, SessionStatus, StageName
from ingestapp.jobs.state import JobState
from ingestapp.stages.base import new_item_fields
from ingestapp.store.models import IngestSession, Item

CHUNK = 5000  # rows per INSERT: bounded memory for any size


def add_finished_session(engine: Engine, items: int, user_id: int | None = None, keywords: int = 3) -> str:
    """Insert a ``completed`` session with ``items`` ok items (distinct SHA-256, ``keywords``
    keywords each, camera metadata) owned by ``user_id``; returns its id."""
    session_id = new_id()
    parameters = IngestParameters(directory="/media/card", enable_nsfw_detection=False)
    state = JobState(session_id, parameters, [StageName.SCANNING], 1, SessionStatus.COMPLETED, total_files=items)
    state.stats["processed_files"] = items
    with engine.begin() as conn:
        conn.execute(IngestSession.__table__.insert().values(
            id=session_id, status=SessionStatus.COMPLETED, parameters=parameters.to_dict(),
            state=state.to_dict(last_event_id=0), created_at=time.time(), user_id=user_id,
        ))
        for start in range(0, items, CHUNK):
            conn.execute(Item.__table__.insert(), [_item_row(session_id, n, keywords)
                                                   for n in range(start, min(items, start + CHUNK))])
    return session_id


def _item_row(session_id: str, n: int, keywords: int) -> dict:
    path = f"card/{n // 1000:03d}/IMG_{n:06d}.JPG"
    fields = new_item_fields()
    fields.update(sha256=hashlib.sha256(f"{session_id}:{n}".encode()).hexdigest(), mime_type="image/jpeg",
                  size_bytes=2_000_000 + n, width=6000, height=4000, rating=n % 6,
                  keywords=[f"keyword {k}" for k in range(keywords)])
    fields["metadata"].update(make="Canon", model="EOS R5", lens_model="RF 24-105mm F4 L IS USM",
                              datetime_original="2026:06:01 12:00:00")
    return {"id": new_id(), "session_id": session_id, "seq": n + 1, "root": "/media", "path": path,
            "path_bytes": path.encode(), "status": ItemStatus.OK, "sha256": fields["sha256"], "fields": fields,
            "errors": [], "excluded": False}

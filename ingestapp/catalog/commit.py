"""The commit: a session's ok items that are not excluded, written into the catalog."""

from __future__ import annotations

import time

from sqlalchemy import Engine, delete, select, update

from ingestapp.catalog.records import orm_session
from ingestapp.core.errors import JobConflict
from ingestapp.core.ids import new_id
from ingestapp.core.parameters import VIDEO_EXTENSIONS
from ingestapp.core.vocabulary import FINISHED_STATUSES, ItemStatus, SessionStatus
from ingestapp.store.models import CatalogEntry, CatalogKeyword, IngestSession, Item


def commit_session(engine: Engine, session_id: str, exclude: set[str] | None = None) -> dict[str, int]:
    """Write the session's ``ok`` items that are not excluded into the catalog in one transaction.

    ``exclude``, when given, replaces the stored exclusions first (the API's ``exclude`` field).
    Idempotent: an entry with the same SHA-256 is updated, never doubled. The result is kept
    with the session (see ``session_review``). Returns ``{"added", "updated", "excluded"}`` counts.
    Raises JobConflict when a job holds the session's lease (it is running, or a resume took it):
    the check and the commit are one transaction, so a racing resume waits for the commit or the
    commit refuses.
    """
    now = time.time()
    added = updated = 0
    with orm_session(engine) as orm, orm.begin():
        settled = orm.execute(  # first, so this transaction holds the write lock from here on
            update(IngestSession)
            .where(
                IngestSession.id == session_id,
                IngestSession.lease_owner.is_(None),
                IngestSession.status.in_((*FINISHED_STATUSES, SessionStatus.INTERRUPTED)),
            )
            .values(committed_at=now)
        ).rowcount
        if not settled:
            raise JobConflict("the session is running")
        items = orm.scalars(select(Item).where(Item.session_id == session_id, Item.status == ItemStatus.OK)).all()
        if exclude is not None:
            for item in items:
                item.excluded = item.id in exclude
        chosen = [item for item in items if not item.excluded]
        hashes = [item.sha256 for item in chosen]
        existing = {e.sha256: e for e in orm.scalars(select(CatalogEntry).where(CatalogEntry.sha256.in_(hashes)))}
        for item in chosen:
            entry = existing.get(item.sha256)
            if entry is None:
                entry = existing[item.sha256] = CatalogEntry(id=new_id(), sha256=item.sha256)
                orm.add(entry)
                added += 1
            else:
                updated += 1
            _fill_entry(entry, item, now)
        orm.flush()
        entry_ids = [entry.id for entry in existing.values()]
        orm.execute(delete(CatalogKeyword).where(CatalogKeyword.entry_id.in_(entry_ids)))
        orm.add_all(
            CatalogKeyword(entry_id=entry.id, keyword=keyword)
            for entry in existing.values()
            for keyword in dict.fromkeys(entry.fields["keywords"])
        )
        result = {"added": added, "updated": updated, "excluded": len(items) - len(chosen)}
        orm.execute(update(IngestSession).where(IngestSession.id == session_id).values(commit_result=result))
    return result


def _fill_entry(entry: CatalogEntry, item: Item, now: float) -> None:
    fields = item.fields
    metadata = fields.get("metadata") or {}
    entry.item_id = item.id
    entry.path = item.path
    entry.root = item.root
    entry.path_bytes = item.path_bytes
    entry.rating = fields["rating"]
    entry.nsfw = fields["nsfw"]
    entry.fields = fields
    entry.committed_at = now
    entry.score = fields.get("score")
    entry.phash = item.phash
    entry.taken_at = metadata.get("datetime_original")
    entry.has_gps = bool(metadata.get("gps"))
    entry.media_type = _media_type(item.path, fields.get("mime_type"))
    entry.search_text = " ".join(
        str(part) for part in (item.path, *fields["keywords"], metadata.get("make"), metadata.get("model"),
                               metadata.get("lens_model")) if part
    ).lower()


def _media_type(path: str, mime_type: str | None) -> str:
    if mime_type:
        return "video" if mime_type.startswith("video/") else "image"
    return "video" if path.lower().endswith(VIDEO_EXTENSIONS) else "image"

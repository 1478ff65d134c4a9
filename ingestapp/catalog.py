"""Items of a session, the commit into the catalog, and catalog queries."""

from __future__ import annotations

import time
from typing import Any

from flask import url_for
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from .jobs import FINISHED_STATUSES, JobConflict, new_id
from .models import CatalogEntry, CatalogKeyword, IngestSession, Item


def item_to_dict(item: Item) -> dict[str, Any]:
    """The API's ``Item``: ``id, path, status`` and the extracted fields, ``thumbnail_url``, ``errors``."""
    return {"id": item.id, "path": item.path, "status": item.status, **_public_fields(item.fields, item.id),
            "errors": item.errors}


def _public_fields(fields: dict[str, Any], item_id: str) -> dict[str, Any]:
    """The extracted fields with the stored thumbnail name replaced by its URL (served by item id)."""
    public = {key: value for key, value in fields.items() if key != "thumbnail"}
    public["thumbnail_url"] = url_for("api.thumbnail", item_id=item_id) if fields.get("thumbnail") else None
    return public


def session_items(engine: Engine, session_id: str, offset: int, limit: int) -> dict[str, Any]:
    """A page of a session's items in path order: ``{"items": [...], "total": int}``."""
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(Item).where(Item.session_id == session_id))
    with _orm(engine) as orm:
        rows = orm.scalars(
            select(Item).where(Item.session_id == session_id).order_by(Item.path).offset(offset).limit(limit)
        ).all()
        return {"items": [item_to_dict(row) for row in rows], "total": total}


def commit_session(engine: Engine, session_id: str, exclude: set[str]) -> dict[str, int]:
    """Write the session's ``ok`` items, minus ``exclude``, into the catalog in one transaction.

    Idempotent: an entry with the same SHA-256 is updated, never doubled.
    Returns ``{"added", "updated", "excluded"}`` counts. Raises JobConflict when a job holds the
    session's lease (it is running, or a resume took it): the check and the commit are one
    transaction, so a racing resume waits for the commit or the commit refuses.
    """
    now = time.time()
    added = updated = 0
    with _orm(engine) as orm, orm.begin():
        settled = orm.execute(  # first, so this transaction holds the write lock from here on
            update(IngestSession)
            .where(
                IngestSession.id == session_id,
                IngestSession.lease_owner.is_(None),
                IngestSession.status.in_((*FINISHED_STATUSES, "interrupted")),
            )
            .values(committed_at=now)
        ).rowcount
        if not settled:
            raise JobConflict("the session is running")
        items = orm.scalars(select(Item).where(Item.session_id == session_id, Item.status == "ok")).all()
        chosen = [item for item in items if item.id not in exclude]
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
    return {"added": added, "updated": updated, "excluded": len(items) - len(chosen)}


def _fill_entry(entry: CatalogEntry, item: Item, now: float) -> None:
    entry.item_id = item.id
    entry.path = item.path
    entry.rating = item.fields["rating"]
    entry.nsfw = item.fields["nsfw"]
    entry.fields = item.fields
    entry.committed_at = now


def query_catalog(
    engine: Engine, keyword: str | None, min_rating: int | None, nsfw: bool | None, offset: int, limit: int
) -> dict[str, Any]:
    """Catalog entries matching every given filter, newest first: ``{"items": [...], "total"}``."""
    query = select(CatalogEntry)
    if keyword:
        query = query.join(CatalogKeyword).where(CatalogKeyword.keyword == keyword)
    if min_rating is not None:
        query = query.where(CatalogEntry.rating >= min_rating)
    if nsfw is not None:
        query = query.where(CatalogEntry.nsfw.is_(nsfw))
    with _orm(engine) as orm:
        total = orm.scalar(select(func.count()).select_from(query.subquery()))
        newest_first = query.order_by(CatalogEntry.committed_at.desc(), CatalogEntry.path)
        rows = orm.scalars(newest_first.offset(offset).limit(limit))
        return {"items": [_entry_to_dict(row) for row in rows], "total": total}


def _entry_to_dict(entry: CatalogEntry) -> dict[str, Any]:
    return {"id": entry.id, "path": entry.path, **_public_fields(entry.fields, entry.item_id),
            "committed_at": entry.committed_at}


def _orm(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)

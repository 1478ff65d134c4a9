"""Items of a session, their review (exclusions), the commit into the catalog, and catalog search."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any

from flask import url_for
from sqlalchemy import ColumnElement, Engine, and_, bindparam, delete, func, literal_column, or_, select, text, update
from sqlalchemy.orm import Session

from ingestapp.core.errors import JobConflict
from ingestapp.core.formats import is_raw
from ingestapp.core.ids import new_id
from ingestapp.core.parameters import VIDEO_EXTENSIONS, ParameterError
from ingestapp.core.vocabulary import FINISHED_STATUSES, PairImport
from ingestapp.store.models import CatalogEntry, CatalogKeyword, IngestSession, Item

#: The review's grid filters (``GET /api/ingest/<id>/items?view=``): what each one shows.
REVIEW_VIEWS = ("all", "new", "duplicates", "errors", "nsfw")


def item_to_dict(item: Item) -> dict[str, Any]:
    """The API's ``Item``: ``id, path, status`` and the extracted fields, ``thumbnail_url``,
    ``errors``, ``excluded``, ``worker`` and ``pair_id``."""
    return {"id": item.id, "path": item.path, "status": item.status, **_public_fields(item.fields, item.id),
            "errors": item.errors, "excluded": bool(item.excluded), "worker": item.worker, "pair_id": item.pair_id}


def _public_fields(fields: dict[str, Any], item_id: str) -> dict[str, Any]:
    """The extracted fields with the stored thumbnail name replaced by its URL (served by item id)."""
    public = {key: value for key, value in fields.items() if key != "thumbnail"}
    public["thumbnail_url"] = url_for("api.thumbnail", item_id=item_id) if fields.get("thumbnail") else None
    return public


def _view_filter(view: str) -> ColumnElement[bool]:
    """The items a review view shows: ``new`` will be imported unless excluded, ``duplicates``
    were skipped, ``errors`` failed a stage, ``nsfw`` were flagged by the NSFW stage."""
    return {
        "all": literal_column("1") == 1,
        "new": Item.status == "ok",
        "duplicates": Item.status == "skipped",
        "errors": Item.status == "error",
        "nsfw": Item.fields["nsfw"].as_boolean().is_(True),
    }[view]


def session_items(engine: Engine, session_id: str, offset: int, limit: int, view: str = "all") -> dict[str, Any]:
    """A page of a session's items in ``view`` (see REVIEW_VIEWS), in path order:
    ``{"items": [...], "total": int}``."""
    where = and_(Item.session_id == session_id, _view_filter(view))
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(Item).where(where))
    with _orm(engine) as orm:
        rows = orm.scalars(select(Item).where(where).order_by(Item.path).offset(offset).limit(limit)).all()
        return {"items": [item_to_dict(row) for row in rows], "total": total}


def session_review(engine: Engine, session_id: str) -> dict[str, Any]:
    """What the review step shows: ``{"counts": {view: n}, "pairs", "excluded", "import_count",
    "imported", "import_offered"}`` (``pairs``: RAW+JPEG pairs among the items, ``jobs.pairs``).
    ``import_count`` is the ok items not excluded (what Import writes);
    ``imported`` is None or ``{"at" (Unix seconds), "added", "updated", "excluded"}``; an import is
    offered until one happened, and again once the exclusions changed after it."""
    with engine.connect() as conn:
        counts = {view: conn.scalar(select(func.count()).select_from(Item).where(
            Item.session_id == session_id, _view_filter(view))) for view in REVIEW_VIEWS}
        excluded = conn.scalar(select(func.count()).select_from(Item).where(
            Item.session_id == session_id, Item.status == "ok", Item.excluded.is_(True)))
        paired = conn.scalar(select(func.count()).select_from(Item).where(
            Item.session_id == session_id, Item.pair_id.is_not(None)))
        session = conn.execute(
            select(IngestSession.committed_at, IngestSession.commit_result, IngestSession.review_changed_at)
            .where(IngestSession.id == session_id)
        ).one()
    imported = None
    if session.committed_at is not None and session.commit_result is not None:
        imported = {"at": session.committed_at, **session.commit_result}
    changed = session.review_changed_at is not None and (
        session.committed_at is None or session.review_changed_at > session.committed_at
    )
    import_count = counts["new"] - excluded
    return {
        "counts": counts,
        "pairs": paired // 2,
        "excluded": excluded,
        "import_count": import_count,
        "imported": imported,
        "import_offered": import_count > 0 and (imported is None or changed),
    }


def set_excluded(engine: Engine, session_id: str, excluded: bool, ids: list[str] | None, view: str | None) -> None:
    """Exclude (or include again) the session's ok items with ``ids``, or all of ``view``."""
    where = [Item.session_id == session_id, Item.status == "ok"]
    where.append(Item.id.in_(ids) if ids is not None else _view_filter(view or "all"))
    with engine.begin() as conn:
        conn.execute(update(Item).where(*where).values(excluded=excluded))
        conn.execute(update(IngestSession).where(IngestSession.id == session_id).values(review_changed_at=time.time()))


def commit_session(
    engine: Engine, session_id: str, exclude: set[str] | None = None, pairs: PairImport = PairImport.BOTH
) -> dict[str, int]:
    """Write the session's ``ok`` items that are not excluded into the catalog in one transaction.

    ``exclude``, when given, replaces the stored exclusions first (the API's ``exclude`` field).
    ``pairs`` says what to take of each RAW+JPEG pair: both, only the RAW or only the JPEG (the
    other is counted as excluded, not marked so); a pair whose other item failed keeps this one.
    Idempotent: an entry with the same SHA-256 is updated, never doubled. The result is kept
    with the session (see ``session_review``). Returns ``{"added", "updated", "excluded"}`` counts.
    Raises JobConflict when a job holds the session's lease (it is running, or a resume took it):
    the check and the commit are one transaction, so a racing resume waits for the commit or the
    commit refuses.
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
        if exclude is not None:
            for item in items:
                item.excluded = item.id in exclude
        present = set(orm.scalars(select(Item.id).where(Item.session_id == session_id, Item.status != "error")))
        chosen = _pair_choice([item for item in items if not item.excluded], pairs, present)
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


def _pair_choice(items: list[Item], pairs: PairImport, present: set[str]) -> list[Item]:
    """``items`` less, for ``raw`` (``jpeg``), the JPEG (RAW) of each pair whose other item is
    ``present`` (ok, excluded or a skipped duplicate: not an error, which would lose the shot)."""
    if pairs == PairImport.BOTH:
        return items
    keep_raw = pairs == PairImport.RAW
    return [item for item in items if item.pair_id not in present or is_raw(item.path) == keep_raw]


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


# -- catalog search ---------------------------------------------------------------------------------

#: ``sort`` values and what they order by (newest / highest first; unknown values last).
CATALOG_SORTS = {
    "added": CatalogEntry.committed_at,
    "taken": CatalogEntry.taken_at,
    "rating": CatalogEntry.rating,
    "score": CatalogEntry.score,
}


@dataclass(frozen=True)
class CatalogQuery:
    """What ``GET /catalog`` and ``GET /api/catalog`` ask for (see ``parse_catalog_query``)."""

    q: str = ""
    keyword: str = ""
    min_rating: int | None = None
    nsfw: bool | None = None
    has_gps: bool | None = None
    media_type: str | None = None  # image | video
    taken_from: datetime.date | None = None
    taken_to: datetime.date | None = None  # inclusive
    sort: str = "added"


def parse_catalog_query(args: Any) -> CatalogQuery:
    """Read a query string (a ``MultiDict``) into a CatalogQuery.

    Raises:
        ParameterError: naming the field, for a ``min_rating`` outside -1..5, a boolean filter
            (``nsfw``, ``has_gps``) that is not true/false, a ``media_type`` other than
            image/video, a date that is not ``YYYY-MM-DD`` (ISO 8601), or an unknown ``sort``.
    """
    values: dict[str, Any] = {"q": args.get("q", "").strip()[:200], "keyword": args.get("keyword", "").strip()}
    raw = args.get("min_rating", "")
    if raw != "":
        if raw not in [str(r) for r in range(-1, 6)]:
            raise ParameterError("min_rating must be between -1 and 5", "min_rating")
        values["min_rating"] = int(raw)
    for name in ("nsfw", "has_gps"):
        raw = args.get(name, "")
        if raw not in ("", "true", "false"):
            raise ParameterError(f"{name} must be true or false", name)
        values[name] = None if raw == "" else raw == "true"
    raw = args.get("media_type", "")
    if raw not in ("", "image", "video"):
        raise ParameterError("media_type must be image or video", "media_type")
    values["media_type"] = raw or None
    for name in ("taken_from", "taken_to"):
        raw = args.get(name, "")
        if raw:
            try:
                values[name] = datetime.date.fromisoformat(raw)
            except ValueError:
                raise ParameterError(f"{name} must be a date, YYYY-MM-DD", name) from None
    sort = args.get("sort", "") or "added"
    if sort not in CATALOG_SORTS:
        raise ParameterError(f"sort must be one of {', '.join(CATALOG_SORTS)}", "sort")
    values["sort"] = sort
    return CatalogQuery(**values)


def query_catalog(engine: Engine, query: CatalogQuery, offset: int, limit: int) -> dict[str, Any]:
    """Catalog entries matching every filter of ``query``, in its sort order (highest or newest
    first, ties by path): ``{"items": [...], "total"}``. ``q`` matches as ``text_match`` says;
    ``keyword`` is one exact keyword (case-insensitive); the date range is on the date taken."""
    select_entries = select(CatalogEntry)
    if query.q:
        select_entries = select_entries.where(text_match(engine.dialect.name, query.q))
    if query.keyword:
        same_keyword = func.lower(CatalogKeyword.keyword) == query.keyword.lower()
        select_entries = select_entries.where(CatalogEntry.id.in_(select(CatalogKeyword.entry_id).where(same_keyword)))
    if query.min_rating is not None:
        select_entries = select_entries.where(CatalogEntry.rating >= query.min_rating)
    if query.nsfw is not None:
        select_entries = select_entries.where(CatalogEntry.nsfw.is_(query.nsfw))
    if query.has_gps is not None:
        select_entries = select_entries.where(CatalogEntry.has_gps.is_(query.has_gps))
    if query.media_type:
        select_entries = select_entries.where(CatalogEntry.media_type == query.media_type)
    if query.taken_from:
        select_entries = select_entries.where(CatalogEntry.taken_at >= query.taken_from.isoformat())
    if query.taken_to:  # ISO strings sort by date: everything before the next day
        next_day = query.taken_to + datetime.timedelta(days=1)
        select_entries = select_entries.where(CatalogEntry.taken_at < next_day.isoformat())
    order = CATALOG_SORTS[query.sort].desc().nulls_last()
    with _orm(engine) as orm:
        total = orm.scalar(select(func.count()).select_from(select_entries.subquery()))
        rows = orm.scalars(select_entries.order_by(order, CatalogEntry.path).offset(offset).limit(limit))
        return {"items": [_entry_to_dict(row) for row in rows], "total": total}


def text_match(dialect: str, q: str) -> ColumnElement[bool]:
    """Entries whose ``search_text`` (path, keywords, camera make and model, lens; lower case)
    contains every whitespace-separated term of ``q``, ignoring case.

    SQLite: the FTS5 trigram index (``catalog_fts``) for terms of 3+ characters, which it can
    match as substrings (sqlite.org/fts5.html §4.3.5); shorter terms fall back to LIKE.
    PostgreSQL: a 'simple' full-text prefix query (``term:*``, GIN-indexed) or a substring LIKE.
    Other databases: LIKE only.
    """
    conditions = []
    for n, term in enumerate(q.lower().split()):
        substring = CatalogEntry.search_text.contains(term, autoescape=True)
        if dialect == "sqlite" and len(term) >= 3:
            phrase = '"' + term.replace('"', '""') + '"'  # an FTS5 string: no query syntax inside
            conditions.append(
                text(f"catalog.rowid IN (SELECT rowid FROM catalog_fts WHERE catalog_fts MATCH :fts_{n})")
                .bindparams(bindparam(f"fts_{n}", phrase))
            )
        elif dialect == "postgresql":
            simple = literal_column("'simple'")  # a literal, so the GIN index on the same expression applies
            prefix = func.to_tsquery(simple, func.quote_literal(term).concat(":*"))
            conditions.append(or_(func.to_tsvector(simple, CatalogEntry.search_text).op("@@")(prefix), substring))
        else:
            conditions.append(substring)
    return and_(*conditions)


def keyword_suggestions(engine: Engine, prefix: str, limit: int = 10) -> list[str]:
    """Catalog keywords starting with ``prefix`` (ignoring case), most used first."""
    pattern = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    uses = func.count().label("uses")
    with engine.connect() as conn:
        rows = conn.execute(
            select(CatalogKeyword.keyword, uses)
            .where(func.lower(CatalogKeyword.keyword).like(pattern, escape="\\"))
            .group_by(CatalogKeyword.keyword)
            .order_by(uses.desc(), CatalogKeyword.keyword)
            .limit(limit)
        ).all()
    return [row.keyword for row in rows]


def _entry_to_dict(entry: CatalogEntry) -> dict[str, Any]:
    return {"id": entry.id, "path": entry.path, **_public_fields(entry.fields, entry.item_id),
            "committed_at": entry.committed_at}


def _orm(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)

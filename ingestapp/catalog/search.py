"""Catalog search: the filters (``CatalogQuery``), the query, full-text matching, keyword suggestions."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, bindparam, func, literal_column, or_, select, text

from ingestapp.catalog.records import orm_session, public_fields
from ingestapp.core.config import SIMILAR_DISTANCE
from ingestapp.core.limits import KEYWORDS_SHOWN
from ingestapp.core.parameters import ParameterError
from ingestapp.store.models import CatalogEntry, CatalogKeyword

#: ``sort`` values and what they order by (newest / highest first; unknown values last).
CATALOG_SORTS = {
    "added": CatalogEntry.committed_at,
    "taken": CatalogEntry.taken_at,
    "rating": CatalogEntry.rating,
    "score": CatalogEntry.score,
}


#: Typed search text (``q``, ``keyword``) holds no control character (Unicode category Cc: C0,
#: DEL, C1): a NUL would end SQLite's FTS5 string early, and nothing a person types needs one.
TEXT_SYNTAX = r"^[^\x00-\x1f\x7f-\x9f]*$"


def check_text(name: str, value: str) -> str:
    """``value`` when it follows ``TEXT_SYNTAX``; raises ParameterError naming ``name`` otherwise."""
    if not re.fullmatch(TEXT_SYNTAX, value):
        raise ParameterError(f"{name} must not hold control characters", name)
    return value


@dataclass(frozen=True)
class CatalogQuery:
    """What ``GET /catalog`` (``parse_catalog_query``) and ``GET /api/catalog`` (``CatalogQueryIn``) ask for."""

    q: str = ""
    keyword: str = ""
    min_rating: int | None = None
    nsfw: bool | None = None
    has_gps: bool | None = None
    media_type: str | None = None  # image | video
    taken_from: datetime.date | None = None
    taken_to: datetime.date | None = None  # inclusive
    sort: str = "added"
    similar_to: str = ""  # a catalog entry id: only the entries similar to it (catalog/similar.py)

    def __post_init__(self) -> None:
        # Typed text is trimmed here, whichever form it came from (the page's or the API's).
        object.__setattr__(self, "q", self.q.strip()[:200])
        object.__setattr__(self, "keyword", self.keyword.strip())
        object.__setattr__(self, "similar_to", self.similar_to.strip())


def parse_catalog_query(args: Any) -> CatalogQuery:
    """Read a query string (a ``MultiDict``) into a CatalogQuery.

    Raises:
        ParameterError: naming the field, for ``q`` or ``keyword`` with a control character, a
            ``min_rating`` outside -1..5, a boolean filter
            (``nsfw``, ``has_gps``) that is not true/false, a ``media_type`` other than
            image/video, a date that is not ``YYYY-MM-DD`` (ISO 8601), or an unknown ``sort``.
    """
    values: dict[str, Any] = {
        "q": check_text("q", args.get("q", "")), "keyword": check_text("keyword", args.get("keyword", "")),
        "similar_to": args.get("similar_to", ""),
    }
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


def query_catalog(
    engine: Engine, query: CatalogQuery, offset: int, limit: int, similar_distance: int = SIMILAR_DISTANCE
) -> dict[str, Any]:
    """Catalog entries matching every filter of ``query``, in its sort order (highest or newest
    first, ties by path): ``{"items": [...], "total"}``, each entry listing its first
    ``KEYWORDS_SHOWN`` keywords and ``keyword_count``, so a page stays small whatever it holds.
    ``q`` matches as ``text_match`` says; ``keyword`` is one exact keyword (case-insensitive); the
    date range is on the date taken; ``similar_to`` keeps the entries within ``similar_distance``
    bits of that entry's hash (none for an id that is not in the catalog, or an entry without a hash)."""
    select_entries = select(CatalogEntry)
    if query.similar_to:
        # Here (off the hub: web/api/catalog.py), not at import: numpy and scipy cost every web
        # process 0.36 s of CPU to load, and only this filter and a session's grouping need them.
        from ingestapp.catalog.similar import similar_entry_ids

        similar = similar_entry_ids(engine, query.similar_to, similar_distance)
        select_entries = select_entries.where(CatalogEntry.id.in_(similar))
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
    with orm_session(engine) as orm:
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
    """The API's ``CatalogEntryOut``: the first ``KEYWORDS_SHOWN`` keywords and how many there are
    (the keyword filter finds an entry by any of them)."""
    public = public_fields(entry.fields, entry.item_id)
    keywords = public["keywords"]
    public.update(keywords=keywords[:KEYWORDS_SHOWN], keyword_count=len(keywords))
    return {"id": entry.id, "path": entry.path, **public, "committed_at": entry.committed_at}

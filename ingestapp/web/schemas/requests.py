"""Request models: query strings and JSON bodies, validated once (``contract.py`` runs them with
the app's media roots as the validation context) and handed to the routes as
``request.context.query`` / ``request.context.json``.

Models are strict (no type coercion beyond what a query string needs: it is text) and refuse
unknown body fields. A model that fails is a 400 ``{error, field}`` (``contract.describe``). The
checks that need the server's filesystem run last, once the request is well-formed: a directory
or browse path outside the media roots (symlinks resolved), or one the server may not read, is a
**403** (``ApiError``: well-formed but not allowed, RFC 9110 §15.5.4); other refusals are 400.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from ingestapp.catalog.review import REVIEW_VIEWS
from ingestapp.catalog.search import CATALOG_SORTS, TEXT_SYNTAX, CatalogQuery
from ingestapp.core.errors import ApiError
from ingestapp.core.parameters import (
    DEFAULT_PATTERN,
    DirectoryNotAllowed,
    IngestParameters,
    ParameterError,
    check_watch,
    resolve_directory,
    split_pattern,
)
from ingestapp.core.paths import OutsideMediaRoots, UnusablePath, confine
from ingestapp.core.vocabulary import PairImport

#: The largest offset SQLite (and PostgreSQL) accept: a signed 64-bit integer.
INT64_MAX = 2**63 - 1
#: The documented form of a file system path (JSON Schema, ECMA-262 regex): absolute, no NUL. Not
#: applied by pydantic, whose regex engine cannot read the PEP 383 surrogate escapes of a name
#: byte that is not UTF-8; the filesystem checks below apply it.
ABSOLUTE_PATH = {"pattern": "^/[^\\u0000]*$"}

#: What a ``pattern`` may be (JSON Schema, ECMA-262 regex; the server checks it too, with ``re``):
#: 1 to 1000 comma-separated globs, each relative (no leading ``/``, no ``..`` name), with spaces only
#: around and inside them, ``[...]`` classes unnested, and no control character. Every pattern it
#: matches passes ``core.parameters.split_pattern``, so schema-valid is accepted and the rest is a 400.
_CHAR = r"[^\s\u0000-\u001f\u007f-\u009f\ufeff,\[\]]"
_CLASS = r"\[[^\u0000-\u001f\u007f-\u009f\ufeff,\[\]]*\]"
_GLOB = rf"(?!/)(?!(?:[^,]*/)?\.\.(?:/| *(?:,|$)))(?:{_CHAR}|{_CLASS})(?: *(?:{_CHAR}|{_CLASS}))*"
PATTERN_SYNTAX = rf"^ *{_GLOB} *(?:, *{_GLOB} *){{0,999}}$"

ReviewView = Literal[REVIEW_VIEWS]
PairChoice = Literal[tuple(choice.value for choice in PairImport)]
CatalogSort = Literal[tuple(CATALOG_SORTS)]
T = TypeVar("T")


def media_roots(info: ValidationInfo) -> list[Path]:
    """The media roots of the validation context (``contract.py`` passes the app's)."""
    if not info.context or "media_roots" not in info.context:
        raise TypeError("validate requests with context={'media_roots': [...]}")
    return info.context["media_roots"]


def refused(check: Callable[..., T], *args: Any) -> T:
    """``check(*args)``, its ParameterError answered as ApiError: 403 for a directory that is not
    allowed, 400 for the rest (the message and field unchanged)."""
    try:
        return check(*args)
    except DirectoryNotAllowed as exc:
        raise ApiError(403, exc.message, exc.field) from None
    except ParameterError as exc:
        raise ApiError(400, exc.message, exc.field) from None


# -- query strings ---------------------------------------------------------------------------------


def _query_integer(value: Any) -> Any:
    """A query-string integer is ASCII digits with an optional minus (``int()`` alone would also
    take ``1_000``, `` 1`` or Arabic-Indic digits, which the documented ``integer`` type does not)."""
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise ValueError("must be an integer")
    return value


def _query_date(value: Any) -> Any:
    """A query-string date is ISO 8601's ``YYYY-MM-DD`` only (pydantic alone would also take a
    number as Unix time, which the documented ``date`` format does not)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("must be a date, YYYY-MM-DD")
    return value


def _json_integer(value: Any) -> Any:
    """A JSON number with no fraction is an integer (JSON Schema 2020-12 §6.1.1: ``1.0`` is an
    ``integer``); strict validation would refuse it as a float."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


QueryInt = Annotated[int, BeforeValidator(_query_integer)]
QueryDate = Annotated[datetime.date, BeforeValidator(_query_date)]


def _optional(description: str) -> Any:
    """An optional query parameter: absent means "no filter" (None), with no ``default: null`` in
    the schema, as a query string has no null."""
    return Field(None, description=description, json_schema_extra=lambda schema: schema.pop("default", None))


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: Fields holding a file name, read from the raw query string as ``os.fsdecode`` reads names
    #: (a %XX byte that is not UTF-8 becomes a surrogate escape), not as text.
    file_name_fields: ClassVar[frozenset[str]] = frozenset()


class SessionsQuery(_Query):
    limit: QueryInt = Field(50, ge=1, le=500, description="how many sessions, newest first")


class PageQuery(_Query):
    offset: QueryInt = Field(0, ge=0, le=INT64_MAX, description="items to skip")
    limit: QueryInt = Field(50, ge=1, le=500, description="items to return")


class ItemsQuery(PageQuery):
    view: ReviewView = Field("all", description="all, new (ok), duplicates (skipped), errors, nsfw")


#: Search text: control characters are a 400 naming the field (``catalog.search.TEXT_SYNTAX``).
SearchText = Annotated[str, Field(pattern=TEXT_SYNTAX)]


class CatalogQueryIn(PageQuery):
    """Catalog search; every given filter must match (more filters may be added)."""

    q: SearchText | SkipJsonSchema[None] = _optional(
        "words matched, ignoring case, as substrings or prefixes of the path, keywords, camera make and model, lens"
        " (no control characters)"
    )
    keyword: SearchText | SkipJsonSchema[None] = _optional("entries having this keyword (ignoring case)")
    min_rating: Annotated[int, Field(ge=-1, le=5), BeforeValidator(_query_integer)] | SkipJsonSchema[None] = (
        _optional("entries rated at least this")
    )
    nsfw: Literal["true", "false"] | SkipJsonSchema[None] = _optional("only NSFW, or only safe")
    has_gps: Literal["true", "false"] | SkipJsonSchema[None] = _optional("only with, or only without, GPS")
    media_type: Literal["image", "video"] | SkipJsonSchema[None] = _optional("only images, or only videos")
    taken_from: QueryDate | SkipJsonSchema[None] = _optional("taken on or after this date (YYYY-MM-DD)")
    taken_to: QueryDate | SkipJsonSchema[None] = _optional("taken on or before this date (YYYY-MM-DD)")
    sort: CatalogSort = Field("added", description="newest or highest first: added, taken, rating, score")
    similar_to: str | SkipJsonSchema[None] = _optional("a catalog entry id: only the entries showing the same picture")

    def catalog_query(self) -> CatalogQuery:
        """The filters, as ``catalog.search.query_catalog`` takes them."""
        return CatalogQuery(
            q=self.q or "", keyword=self.keyword or "", min_rating=self.min_rating,
            nsfw=None if self.nsfw is None else self.nsfw == "true",
            has_gps=None if self.has_gps is None else self.has_gps == "true",
            media_type=self.media_type, taken_from=self.taken_from, taken_to=self.taken_to, sort=self.sort,
            similar_to=self.similar_to or "",
        )


class KeywordsQuery(_Query):
    prefix: str = Field("", max_length=100, description="what the keyword starts with (ignoring case)")


class BrowseQuery(_Query):
    """``path`` must name a directory inside a media root: 403 outside them (symlinks resolved)."""

    file_name_fields: ClassVar[frozenset[str]] = frozenset({"path"})

    path: str = Field(description="an absolute directory path inside a media root", json_schema_extra=ABSOLUTE_PATH)

    @model_validator(mode="after")
    def _inside_media_roots(self, info: ValidationInfo) -> BrowseQuery:
        if not os.path.isabs(self.path):
            raise ApiError(400, "path must be an absolute directory path", "path")
        try:
            self.path = str(confine(Path(self.path), media_roots(info)))
        except OutsideMediaRoots:
            raise ApiError(403, "path is outside the configured media roots", "path") from None
        except UnusablePath as exc:
            raise ApiError(400, str(exc), "path") from None
        return self


class MetricsQuery(_Query):
    greenlets: Literal["0", "1"] = Field("0", description="1: add the live greenlet count (walks the heap: slow)")


class StreamQuery(_Query):
    last_event_id: str | SkipJsonSchema[None] = _optional(
        "the same as the Last-Event-ID header, for clients that cannot set headers"
    )


# -- JSON bodies -----------------------------------------------------------------------------------


def _when_true(name: str) -> dict[str, Any]:
    return {"properties": {name: {"const": True}}, "required": [name]}


#: ``core.parameters.check_watch`` in the contract (JSON Schema ``if``/``then``), so a body the
#: schema accepts is one the server accepts: ``auto_import`` needs ``watch``; ``watch`` takes no ``max_files``.
WATCH_RULES: dict[str, Any] = {"allOf": [
    {"if": _when_true("auto_import"), "then": _when_true("watch")},
    {"if": _when_true("watch"), "then": {"properties": {"max_files": {"type": "null"}}}},
]}


class IngestParametersIn(BaseModel):
    """What a session does. Once the body is well-formed, ``core.parameters`` checks the directory
    (403 outside the media roots or unreadable; 400 missing or not a directory) and the pattern."""

    model_config = ConfigDict(extra="forbid", strict=True, title="IngestParameters", json_schema_extra=WATCH_RULES)

    directory: str = Field(
        description="absolute directory inside a media root (symlinks resolved); 403 outside them",
        json_schema_extra=ABSOLUTE_PATH,
    )
    pattern: str = Field(DEFAULT_PATTERN, description="comma-separated globs relative to directory; ** spans dirs",
                         json_schema_extra={"pattern": PATTERN_SYNTAX})
    extract_metadata: bool = True
    extract_keywords: bool = True
    import_scores: bool = True
    enable_nsfw_detection: bool = True
    nsfw_threshold: float = Field(0.7, ge=0.0, le=1.0, allow_inf_nan=False)
    max_files: Annotated[int, Field(ge=1), BeforeValidator(_json_integer)] | None = None
    skip_duplicates: bool = True
    watch: bool = Field(False, description="after the scan, keep ingesting each new or changed file (status watching)")
    auto_import: bool = Field(False, description="with watch: commit each new ok item to the catalog at once")

    @model_validator(mode="after")
    def _check_directory_and_pattern(self, info: ValidationInfo) -> IngestParametersIn:
        refused(check_watch, self.watch, self.auto_import, self.max_files)  # a 400 before the filesystem's 403
        self.directory = str(refused(resolve_directory, self.directory, media_roots(info)))
        refused(split_pattern, self.pattern)
        if not re.fullmatch(PATTERN_SYNTAX, self.pattern):
            raise ApiError(400, "pattern must be comma-separated relative globs: no control characters, "
                           "no nested [ ]", "pattern")
        self.pattern = self.pattern.strip()
        return self

    def ingest_parameters(self) -> IngestParameters:
        return IngestParameters(**self.model_dump())


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

    def ingest_parameters(self) -> IngestParameters:
        body = self.root
        return (body.parameters if isinstance(body, WrappedParameters) else body).ingest_parameters()


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


#: Every field name a request model has (to name the field of a validation error).
REQUEST_FIELDS = frozenset(
    name
    for model in (SessionsQuery, ItemsQuery, CatalogQueryIn, KeywordsQuery, BrowseQuery, MetricsQuery, StreamQuery,
                  IngestParametersIn, WrappedParameters, CommitRequest, ExcludeByIds, ExcludeByView)
    for name in model.model_fields
)

"""Server-rendered pages: the ingest form, a session's live progress, sessions, the catalog.

Every page is complete HTML before any script runs (the progress view renders the current
state); the scripts in ``static/`` then keep it live. Jinja2 autoescaping covers all server data.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request
from werkzeug.security import safe_join

from ingestapp.accounts.auth import check_session_access, owner_filter, require_page_user
from ingestapp.catalog.search import CATALOG_SORTS, parse_catalog_query, query_catalog
from ingestapp.core.errors import JobNotFound
from ingestapp.core.parameters import DEFAULT_PATTERN, ParameterError
from ingestapp.core.paths import display_path
from ingestapp.core.vocabulary import LABELS, RUNNING_STATUSES, SessionStatus, for_scripts
from ingestapp.jobs.registry import JobRegistry
from ingestapp.store.db import off_hub

bp = Blueprint("pages", __name__)
bp.add_app_template_filter(display_path, "display_path")  # a directory may hold bytes that are not UTF-8
bp.before_request(require_page_user)  # signed-out visitors go to /login?next=...

CATALOG_PAGE_SIZE = 24
#: Pages past this would need an offset beyond a 64-bit integer (the database's limit).
MAX_CATALOG_PAGE = (2**63 - 1) // CATALOG_PAGE_SIZE


def registry() -> JobRegistry:
    """The app's job registry."""
    return current_app.extensions["ingest_jobs"]


#: A static file whose URL carries its content hash never changes: browsers may keep it a year.
STATIC_MAX_AGE = 365 * 24 * 3600


@functools.cache
def static_version(root: str, filename: str) -> str | None:
    """The first 12 hex digits of the SHA-256 of a static file (None if there is no such file).
    Cached per process: static files change only with a deployment, which restarts it."""
    path = safe_join(root, filename)  # never outside the static folder
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:12]
    except OSError:
        return None


@bp.app_url_defaults
def _static_version(endpoint: str, values: dict[str, Any]) -> None:
    """``url_for("static", ...)`` adds ``?v=<content hash>``, so a page's scripts and styles come
    from the browser's cache on the next page (no revalidation round trip) and a changed file gets
    a new URL."""
    if endpoint == "static" and "filename" in values and "v" not in values:
        version = static_version(current_app.static_folder or "", values["filename"])
        if version:
            values["v"] = version


@bp.after_app_request
def _cache_versioned_static(response: Response) -> Response:
    """A static file asked for by its current content hash is immutable (RFC 8246)."""
    version = request.args.get("v")
    if request.endpoint == "static" and response.status_code == 200 and version and version == static_version(
        current_app.static_folder or "", (request.view_args or {}).get("filename", "")
    ):
        response.cache_control.public = True
        response.cache_control.max_age = STATIC_MAX_AGE
        response.cache_control.immutable = True
        response.cache_control.no_cache = None
    return response


@bp.app_context_processor
def _labels() -> dict[str, Any]:
    """Every template gets ``labels`` (status, stage and counter names) and ``vocabulary`` (for the
    scripts, see vocabulary.py)."""
    return {"labels": LABELS, "vocabulary": for_scripts()}


# -- formatting (static/format.js formats the same way) ---------------------------------------------


@bp.app_template_filter("duration")
def format_duration(ms: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; an em dash for None."""
    if ms is None:
        return "—"
    seconds = max(0, round(ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@bp.app_template_filter("percent")
def format_percent(value: float | None) -> str:
    """One decimal, rounded down so that only a finished session reads 100%."""
    if value is None:
        return "—"
    if value >= 100:
        return "100%"
    return f"{math.floor(value * 10) / 10:.1f}%"


@bp.app_template_filter("clock")
def format_clock(timestamp: float | None) -> str:
    """``HH:MM:SS`` in the server's local time (the script re-renders it in the browser's)."""
    return "" if timestamp is None else time.strftime("%H:%M:%S", time.localtime(timestamp))


@bp.app_template_filter("datetime")
def format_datetime(timestamp: float | None) -> str:
    """``YYYY-MM-DD HH:MM`` in the server's local time; an em dash for None."""
    return "—" if timestamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@bp.app_template_filter("taken")
def format_taken(iso: str) -> str:
    """``2023-12-28T19:42:10-03:00`` → ``2023-12-28 19:42`` (the camera's local time, as recorded)."""
    return str(iso).replace("T", " ")[:16]


@bp.app_template_global("camera")
def format_camera(make: str | None, model: str | None) -> str | None:
    """``Canon`` + ``Canon EOS R6`` → ``Canon EOS R6``: the model usually repeats the maker."""
    if not make or not model:
        return make or model
    return model if model.lower().startswith(make.split(" ")[0].lower()) else f"{make} {model}"


@bp.app_template_filter("pixels")
def format_pixels(item: dict[str, Any]) -> str:
    """Width and height (joined by a multiplication sign) as the picture is displayed: EXIF
    orientations 5-8 turn it a quarter, so they swap the stored sizes (CIPA DC-008, Exif 2.32
    "Orientation"; static/format.js ``pixels`` does the same)."""
    width, height = item["width"], item["height"]
    turned = ((item.get("metadata") or {}).get("orientation") or 1) >= 5
    return f"{height}\u00d7{width}" if turned else f"{width}\u00d7{height}"


@bp.app_template_filter("isotime")
def format_isotime(timestamp: float | None) -> str:
    """The ``datetime`` attribute of a ``<time>`` element (UTC)."""
    return "" if timestamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@bp.app_template_global("lead_text")
def lead_text(state: dict[str, Any]) -> str:
    """What follows a stopped session's status in its lead line (static/ingest.js ``leadText`` says
    the same): "Interrupted — 95 of 400 files done", "Cancelled after 85 of 400 files",
    "Watching — 12 files ingested, last file 14:03:27", "Queued — waits for its turn: …"; empty
    while it runs (the progress row counts then)."""
    status = state["status"]
    done = state["stats"]["processed_files"] + state["stats"]["skipped_duplicates"]
    of = f"{done} of {state['total_files']} files"
    if status == SessionStatus.WATCHING:  # no end to count towards: what it took in, and when last
        last = (state.get("watch") or {}).get("last_file_at")
        return f"— {done} files ingested" + (f", last file {format_clock(last)}" if last else "")
    if status == SessionStatus.QUEUED and state.get("awaits_turn"):  # its user's share is taken (jobs/turns.py)
        return "— waits for its turn: it starts when another session of the same user ends"
    if status in RUNNING_STATUSES:
        return ""
    if status == SessionStatus.INTERRUPTED:
        return f"— {of} done"
    if status == SessionStatus.COMPLETED:
        return f"— {of}"
    return f"after {of}"


@bp.app_template_global("found_note")
def found_note(state: dict[str, Any]) -> str:
    """How many matching files the folder holds, when ``max_files`` left some out (``files_found``
    in the state); empty otherwise. static/ingest.js ``foundNote`` says the same."""
    found = state.get("files_found") or 0
    if found <= state["total_files"]:
        return ""
    return f"· the folder holds {found} (max files: {state['parameters']['max_files']})"


# -- pages ------------------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    """The ingest form."""
    return render_template("index.html", roots=registry().media_roots)


@bp.get("/ingest/<session_id>")
def session(session_id: str) -> str:
    """The progress view, rendered with the current state so it is right before any script runs."""
    try:
        check_session_access(session_id)
        state = registry().state(session_id)
    except JobNotFound:
        abort(404)
    return render_template("session.html", state=state, default_pattern=DEFAULT_PATTERN)


@bp.get("/sessions")
def sessions() -> str:
    """Recent sessions, as ``GET /api/ingest/sessions`` lists them (``?limit=``, 1 to 500, too)."""
    limit = min(500, max(1, _int(request.args.get("limit"), 50)))
    return render_template("sessions.html", sessions=registry().sessions(limit, user_id=owner_filter()))


#: The catalog search form's fields (``GET /catalog``, as ``GET /api/catalog`` takes them).
CATALOG_FIELDS = (
    "q", "keyword", "min_rating", "nsfw", "has_gps", "media_type", "taken_from", "taken_to", "sort", "similar_to"
)

#: Typed words: when one is refused the page shows no entry (another invalid filter is dropped instead).
SEARCH_TEXT_FIELDS = ("q", "keyword")


@bp.get("/catalog")
def catalog() -> str:
    """The catalog search (a plain GET form; see ``parse_catalog_query`` for the fields)."""
    filters, error = catalog_filters(request.args)
    page = min(max(1, _int(request.args.get("page"), 1)), MAX_CATALOG_PAGE)
    query = parse_catalog_query(filters)
    offset, distance = (page - 1) * CATALOG_PAGE_SIZE, current_app.config["SIMILAR_DISTANCE"]
    if error and error["field"] in SEARCH_TEXT_FIELDS:  # unreadable words match nothing, not everything
        result: dict[str, Any] = {"items": [], "total": 0}
    else:
        result = off_hub(query_catalog, registry().engine, query, offset, CATALOG_PAGE_SIZE, distance)
    pages = max(1, math.ceil(result["total"] / CATALOG_PAGE_SIZE))
    narrowed = any(value for name, value in filters.items() if name != "sort")
    return render_template(
        "catalog.html", result=result, filters=filters, error=error, page=page, pages=pages, narrowed=narrowed,
        sorts=CATALOG_SORTS,
    )


def catalog_filters(args: Any) -> tuple[dict[str, str], dict[str, str] | None]:
    """The search form's values, and ``{"field", "error"}`` for the first invalid one (cleared,
    so the page still shows a result)."""
    filters = {name: args.get(name, "").strip() for name in CATALOG_FIELDS}
    error = None
    while True:
        try:
            parse_catalog_query(filters)
            return filters, error
        except ParameterError as exc:
            error = error or {"field": exc.field, "error": exc.message}
            filters[exc.field or "q"] = ""


def _int(raw: str | None, default: int) -> int:
    """``raw`` as an integer, ``default`` when it is missing or not one."""
    try:
        return int(raw) if raw else default
    except ValueError:
        return default

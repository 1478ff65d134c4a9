"""The JSON API blueprint: start, watch, cancel, resume and commit ingest sessions; the catalog.

Errors are JSON ``{"error", "field"}``. State-changing requests must be ``application/json``
and same-origin (no CORS is offered, so a cross-site page can neither send one nor read one).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, url_for
from greenlet import greenlet
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from .catalog import (
    REVIEW_VIEWS,
    commit_session,
    keyword_suggestions,
    parse_catalog_query,
    query_catalog,
    session_items,
    session_review,
    set_excluded,
)
from .jobs import JobConflict, JobNotFound, JobRegistry
from .models import Item
from .parameters import MEDIA_EXTENSIONS, ParameterError, parse_parameters
from .paths import OutsideMediaRoots, UnusablePath, confine, display_path, path_error
from .stream import EventStream, StreamSettings, is_finished, parse_last_event_id

bp = Blueprint("api", __name__)


class ApiError(Exception):
    """An error answered as ``{"error": message, "field": field}`` with ``status``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def registry() -> JobRegistry:
    return current_app.extensions["ingest_jobs"]


def error_response(status: int, message: str, field: str | None = None) -> Response:
    response = jsonify(error=message, field=field)
    response.status_code = status
    return response


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.field)


@bp.errorhandler(ParameterError)
def _parameter_error(exc: ParameterError) -> Response:
    return error_response(400, exc.message, exc.field)


@bp.errorhandler(JobNotFound)
def _not_found(_exc: JobNotFound) -> Response:
    return error_response(404, "no such session", "session_id")


@bp.errorhandler(JobConflict)
def _conflict(exc: JobConflict) -> Response:
    return error_response(409, str(exc), None)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return error_response(exc.code or 500, exc.description or exc.name, None)


@bp.before_request
def _guard_state_changes() -> Response | None:
    if request.method != "POST":
        return None
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return error_response(403, "cross-site requests are refused", "Origin")
    if request.mimetype != "application/json":
        return error_response(415, "the body must be application/json", None)
    return None


def json_body() -> Any:
    """The parsed JSON body; an empty body counts as ``{}``. Raises ApiError(400) if malformed."""
    if not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "the body is not valid JSON", None)
    return body


def int_arg(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    """A query-string integer within bounds. Raises ApiError(400, field=name)."""
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", name) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ApiError(400, f"{name} must be between {minimum} and {maximum or 'any'}", name)
    return value


def session_urls(session_id: str) -> dict[str, str]:
    return {
        "session_id": session_id,
        "status_url": url_for("api.status", session_id=session_id),
        "stream_url": url_for("api.stream", session_id=session_id),
    }


# -- sessions -------------------------------------------------------------------------------------


@bp.post("/api/ingest/process")
def process() -> tuple[Response, int]:
    """Start a session. 202 ``{"session_id", "status_url", "stream_url"}``; 400 on bad input."""
    parameters = parse_parameters(json_body(), registry().media_roots)
    job = registry().start(parameters)
    return jsonify(session_urls(job.session_id)), 202


@bp.get("/api/ingest/status/<session_id>")
def status(session_id: str) -> Response:
    return jsonify(registry().state(session_id))


@bp.post("/api/ingest/<session_id>/cancel")
def cancel(session_id: str) -> tuple[Response, int]:
    json_body()
    registry().cancel(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.post("/api/ingest/<session_id>/resume")
def resume(session_id: str) -> tuple[Response, int]:
    json_body()
    registry().resume(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.get("/api/ingest/sessions")
def sessions() -> Response:
    """Sessions, newest first: ``{"sessions": [{session_id, status, created_at, directory, ...}]}``."""
    return jsonify(sessions=registry().sessions(int_arg("limit", 50, 1, 500)))


def view_arg() -> str:
    """The ``view`` query argument (a review filter). Raises ApiError(400, field="view")."""
    view = request.args.get("view", "") or "all"
    if view not in REVIEW_VIEWS:
        raise ApiError(400, f"view must be one of {', '.join(REVIEW_VIEWS)}", "view")
    return view


@bp.get("/api/ingest/<session_id>/items")
def items(session_id: str) -> Response:
    """A page of the session's items, ``view`` = all | new | duplicates | errors | nsfw."""
    registry().state(session_id)  # 404 for an unknown session
    offset = int_arg("offset", 0)
    limit = int_arg("limit", 50, 1, 500)
    return jsonify(session_items(registry().engine, session_id, offset, limit, view_arg()))


@bp.get("/api/ingest/<session_id>/review")
def review(session_id: str) -> Response:
    """The review step: ``{"counts", "excluded", "import_count", "imported", "import_offered"}``."""
    registry().state(session_id)  # 404 for an unknown session
    return jsonify(session_review(registry().engine, session_id))


@bp.post("/api/ingest/<session_id>/exclusions")
def exclusions(session_id: str) -> Response:
    """Exclude items from the import (``"excluded": true``) or include them again, by ``ids`` or
    by ``view`` (every ok item of that review filter). Answers with the review, as ``/review``."""
    body = json_body()
    if not isinstance(body, dict) or set(body) - {"excluded", "ids", "view"}:
        raise ApiError(400, "the body may only hold excluded, ids and view", None)
    if not isinstance(body.get("excluded"), bool):
        raise ApiError(400, "excluded must be true or false", "excluded")
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(x, str) for x in ids)):
        raise ApiError(400, "ids must be a list of item ids", "ids")
    view = body.get("view")
    if (ids is None) == (view is None) or (view is not None and view not in REVIEW_VIEWS):
        raise ApiError(400, f"give either ids or a view ({', '.join(REVIEW_VIEWS)})", "view")
    registry().state(session_id)  # 404 for an unknown session
    set_excluded(registry().engine, session_id, body["excluded"], ids, view)
    return jsonify(session_review(registry().engine, session_id))


@bp.post("/api/ingest/<session_id>/commit")
def commit(session_id: str) -> Response:
    """Write the session's ok items that are not excluded into the catalog:
    ``{"added", "updated", "excluded"}``. An ``exclude`` list replaces the stored exclusions."""
    body = json_body()
    if not isinstance(body, dict) or set(body) - {"exclude"}:
        raise ApiError(400, "the body may only hold exclude", "exclude")
    exclude = body.get("exclude")
    if exclude is not None and (not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude)):
        raise ApiError(400, "exclude must be a list of item ids", "exclude")
    state = registry().state(session_id)
    if not is_finished(state) and state["status"] != "interrupted":
        raise JobConflict(f"the session is still {state['status']}")
    return jsonify(commit_session(registry().engine, session_id, None if exclude is None else set(exclude)))


# -- the live stream --------------------------------------------------------------------------------


@bp.get("/api/ingest/stream/<session_id>")
def stream(session_id: str) -> Response:
    """Server-Sent Events for one session (see ``stream.py``); 404 JSON for an unknown session."""
    last_event_id = parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    )
    config = current_app.config
    settings = StreamSettings(config["SSE_RETRY_MS"], config["SSE_KEEPALIVE"], config["SSE_MAX_AGE"])
    body = EventStream(
        registry(),
        current_app.extensions["ingest_broker"],
        settings,
        session_id,
        last_event_id,
        request.environ.get("gunicorn.socket"),
    )
    if body.up_to_date:
        body.close()
        return Response(status=204)  # nothing more will come: EventSource stops (WHATWG HTML §9.2.3)
    response = Response(iter(body), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer this response
    response.call_on_close(body.close)
    return response


@bp.get("/api/ingest/metrics")
def metrics() -> Response:
    """Stream counters; ``?greenlets=1`` adds the live greenlet count (walks the heap: slow)."""
    result = current_app.extensions["ingest_broker"].metrics()
    if request.args.get("greenlets") == "1":
        result["greenlets"] = sum(isinstance(o, greenlet) and not o.dead for o in gc.get_objects())
    return jsonify(result)


# -- media roots and thumbnails ---------------------------------------------------------------------


@bp.get("/api/ingest/roots")
def roots() -> Response:
    return jsonify(roots=[{"name": root.name or str(root), "path": str(root)} for root in registry().media_roots])


def _subdirectories(directory: Path) -> list[dict[str, Any]]:
    """``[{"name", "path", "media_count"}]``: the visible subfolders of ``directory`` and how many
    media files (by extension) each holds directly. Runs in the threadpool (one listing each)."""
    with os.scandir(directory) as entries:
        subdirectories = sorted((e for e in entries if not e.name.startswith(".") and _is_directory(e)),
                                key=lambda e: e.name)
    listing = []
    for entry in subdirectories:
        try:
            with os.scandir(entry.path) as files:
                count = sum(1 for f in files if f.name.lower().endswith(MEDIA_EXTENSIONS) and f.is_file())
        except OSError:
            count = None
        listing.append({"name": display_path(entry.name), "path": str(directory / entry.name), "media_count": count})
    return listing


@bp.get("/api/ingest/browse")
def browse() -> Response:
    """Subdirectories of ``path`` (inside a media root): ``{"path", "parent", "directories"}``.

    ``directories`` are ``{name (display form), path (lossless), media_count}``; 400 for a path
    that is too long, a symlink loop or holds a NUL byte; 404 when it is not a directory.
    """
    raw = _path_query()
    if not raw or not os.path.isabs(raw):
        raise ApiError(400, "path must be an absolute directory path", "path")
    roots = registry().media_roots
    try:
        directory = confine(Path(raw), roots)
    except OutsideMediaRoots:
        raise ApiError(400, "path is outside the configured media roots", "path") from None
    except UnusablePath as exc:
        raise ApiError(400, str(exc), "path") from None
    try:
        directories = registry().threadpool.apply(_subdirectories, (directory,))
    except PermissionError:
        raise ApiError(403, "permission denied", "path") from None
    except (FileNotFoundError, NotADirectoryError):
        raise ApiError(404, "no such directory", "path") from None
    except OSError as exc:
        raise ApiError(400, path_error(exc), "path") from None
    parent = directory.parent if directory not in roots else None
    return jsonify(path=str(directory), parent=str(parent) if parent else None, directories=directories)


def _path_query() -> str:
    """``?path=`` decoded as file names are (``os.fsdecode``): a %XX byte that is not part of UTF-8
    becomes a surrogate escape, so a directory whose name is not UTF-8 can be browsed."""
    query = request.query_string.decode("utf-8", "surrogateescape")
    return next((value for key, value in parse_qsl(query, errors="surrogateescape") if key == "path"), "")


def _is_directory(entry: os.DirEntry) -> bool:
    """A directory, or a link to one (a broken or looping link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


@bp.get("/api/ingest/items/<item_id>/thumbnail")
def thumbnail(item_id: str) -> Response:
    """The item's thumbnail, looked up by id (never by a path from the request)."""
    with registry().engine.connect() as conn:
        fields = conn.scalar(select(Item.fields).where(Item.id == item_id))
    if not fields or not fields.get("thumbnail"):
        raise ApiError(404, "no thumbnail for this item", "item_id")
    response = send_from_directory(registry().thumbnail_dir, fields["thumbnail"], max_age=31536000)
    response.headers["Cache-Control"] += ", immutable"  # the name is the content hash
    return response


@bp.get("/api/catalog")
def catalog() -> Response:
    """Catalog search: ``q`` (terms matched in path, keywords, camera, lens), ``keyword``,
    ``min_rating`` (-1 to 5), ``nsfw``, ``has_gps`` (true/false), ``media_type`` (image/video),
    ``taken_from``/``taken_to`` (YYYY-MM-DD), ``sort`` (added, taken, rating, score)."""
    query = parse_catalog_query(request.args)
    return jsonify(query_catalog(registry().engine, query, int_arg("offset", 0), int_arg("limit", 50, 1, 500)))


@bp.get("/api/catalog/keywords")
def catalog_keywords() -> Response:
    """Keyword suggestions: ``{"keywords": [...]}`` starting with ``prefix``, most used first."""
    return jsonify(keywords=keyword_suggestions(registry().engine, request.args.get("prefix", "").strip()[:100]))


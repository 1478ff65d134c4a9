"""The JSON API blueprint: start, watch, cancel, resume and commit ingest sessions; the catalog.

Errors are JSON ``{"error", "field"}``. Every route needs a signed-in user or an API token
(``auth.py``: 401 otherwise); non-admins reach only their own sessions (404 for others').
State-changing requests must be ``application/json`` and same-origin (scheme, host and port; no
CORS is offered, so a cross-site page can neither send one nor read one), and with the cookie
they need the CSRF header too.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, url_for
from flask_login import current_user
from greenlet import greenlet
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from .auth import check_session_access, item_visible, owner_filter, require_api_user
from .catalog import commit_session, query_catalog, session_items
from .jobs import JobConflict, JobNotFound, JobRegistry
from .models import Item
from .parameters import ParameterError, parse_parameters
from .paths import OutsideMediaRoots, confine
from .security import same_origin
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


bp.before_request(require_api_user)  # first: 401 before any other check


@bp.before_request
def _guard_state_changes() -> Response | None:
    if request.method != "POST":
        return None
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin):
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
    job = registry().start(parameters, user_id=current_user.id)
    return jsonify(session_urls(job.session_id)), 202


@bp.get("/api/ingest/status/<session_id>")
def status(session_id: str) -> Response:
    check_session_access(session_id)
    return jsonify(registry().state(session_id))


@bp.post("/api/ingest/<session_id>/cancel")
def cancel(session_id: str) -> tuple[Response, int]:
    json_body()
    check_session_access(session_id)
    registry().cancel(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.post("/api/ingest/<session_id>/resume")
def resume(session_id: str) -> tuple[Response, int]:
    json_body()
    check_session_access(session_id)
    registry().resume(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.get("/api/ingest/sessions")
def sessions() -> Response:
    """Sessions, newest first: ``{"sessions": [{session_id, status, created_at, directory, ...}]}``."""
    return jsonify(sessions=registry().sessions(int_arg("limit", 50, 1, 500), user_id=owner_filter()))


@bp.get("/api/ingest/<session_id>/items")
def items(session_id: str) -> Response:
    check_session_access(session_id)  # 404 for an unknown session or another user's
    offset = int_arg("offset", 0)
    limit = int_arg("limit", 50, 1, 500)
    return jsonify(session_items(registry().engine, session_id, offset, limit))


@bp.post("/api/ingest/<session_id>/commit")
def commit(session_id: str) -> Response:
    """Write the session's ok items into the catalog: ``{"added", "updated", "excluded"}``."""
    body = json_body()
    if not isinstance(body, dict) or set(body) - {"exclude"}:
        raise ApiError(400, "the body may only hold exclude", "exclude")
    exclude = body.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise ApiError(400, "exclude must be a list of item ids", "exclude")
    check_session_access(session_id)
    state = registry().state(session_id)
    if not is_finished(state) and state["status"] != "interrupted":
        raise JobConflict(f"the session is still {state['status']}")
    return jsonify(commit_session(registry().engine, session_id, set(exclude)))


# -- the live stream --------------------------------------------------------------------------------


@bp.get("/api/ingest/stream/<session_id>")
def stream(session_id: str) -> Response:
    """Server-Sent Events for one session (see ``stream.py``); 404 JSON for an unknown session."""
    check_session_access(session_id)
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
    """Stream counters, for admins (they name every user's sessions); ``?greenlets=1`` adds the
    live greenlet count (walks the heap: slow). 403 for other users."""
    if not current_user.is_admin:
        raise ApiError(403, "only admins see the stream metrics", None)
    result = current_app.extensions["ingest_broker"].metrics()
    if request.args.get("greenlets") == "1":
        result["greenlets"] = sum(isinstance(o, greenlet) and not o.dead for o in gc.get_objects())
    return jsonify(result)


# -- media roots and thumbnails ---------------------------------------------------------------------


@bp.get("/api/ingest/roots")
def roots() -> Response:
    return jsonify(roots=[{"name": root.name or str(root), "path": str(root)} for root in registry().media_roots])


@bp.get("/api/ingest/browse")
def browse() -> Response:
    """Subdirectories of ``path`` (inside a media root): ``{"path", "parent", "directories"}``."""
    raw = request.args.get("path", "")
    if not raw or not os.path.isabs(raw):
        raise ApiError(400, "path must be an absolute directory path", "path")
    roots = registry().media_roots
    try:
        directory = confine(Path(raw), roots)
    except OutsideMediaRoots:
        raise ApiError(400, "path is outside the configured media roots", "path") from None
    if not directory.is_dir():
        raise ApiError(404, "no such directory", "path")
    try:
        names = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    except PermissionError:
        raise ApiError(403, "permission denied", "path") from None
    parent = directory.parent if directory not in roots else None
    return jsonify(
        path=str(directory),
        parent=str(parent) if parent else None,
        directories=[{"name": name, "path": str(directory / name)} for name in names],
    )


@bp.get("/api/ingest/items/<item_id>/thumbnail")
def thumbnail(item_id: str) -> Response:
    """The item's thumbnail, looked up by id (never by a path from the request); 404 for another
    user's item unless it is in the shared catalog."""
    if not item_visible(item_id):
        raise ApiError(404, "no thumbnail for this item", "item_id")
    with registry().engine.connect() as conn:
        fields = conn.scalar(select(Item.fields).where(Item.id == item_id))
    if not fields or not fields.get("thumbnail"):
        raise ApiError(404, "no thumbnail for this item", "item_id")
    response = send_from_directory(registry().thumbnail_dir, fields["thumbnail"], max_age=31536000)
    response.headers["Cache-Control"] += ", immutable"  # the name is the content hash
    return response


@bp.get("/api/catalog")
def catalog() -> Response:
    """Catalog entries filtered by ``keyword``, ``min_rating`` (-1 to 5), ``nsfw`` (true/false)."""
    nsfw_arg = request.args.get("nsfw", "")
    if nsfw_arg not in ("", "true", "false"):
        raise ApiError(400, "nsfw must be true or false", "nsfw")
    min_rating = int_arg("min_rating", -99, -1, 5) if request.args.get("min_rating") else None
    return jsonify(
        query_catalog(
            registry().engine,
            request.args.get("keyword") or None,
            min_rating,
            None if nsfw_arg == "" else nsfw_arg == "true",
            int_arg("offset", 0),
            int_arg("limit", 50, 1, 500),
        )
    )


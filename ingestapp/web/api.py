"""The JSON API blueprint: start, watch, cancel, resume and commit ingest sessions; the catalog.

Errors are JSON ``{"error", "field"}``, for every path under ``/api`` (unknown routes and wrong
methods too). Every route needs a signed-in user or an API token (``auth.py``: 401 otherwise);
non-admins reach only their own sessions (404 for others'). State-changing requests must be
``application/json`` and same-origin (scheme, host and port; no CORS is offered, so a cross-site
page can neither send one nor read one), and with the cookie they need the CSRF header too.
Request and response shapes are the models of ``schemas.py``, declared on each route with
``spec.validate`` (see ``contract.py``).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, url_for
from flask_login import current_user
from greenlet import greenlet
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from ingestapp.accounts.auth import check_session_access, item_visible, owner_filter, require_api_user
from ingestapp.accounts.security import same_origin
from ingestapp.catalog.service import (
    commit_session,
    keyword_suggestions,
    parse_catalog_query,
    query_catalog,
    session_items,
    session_review,
    set_excluded,
)
from ingestapp.core.errors import JobConflict, JobNotFound
from ingestapp.core.parameters import MEDIA_EXTENSIONS, ParameterError, parse_parameters
from ingestapp.core.paths import OutsideMediaRoots, UnusablePath, confine, display_path, path_error
from ingestapp.core.vocabulary import PairImport
from ingestapp.events.sse import EventStream, StreamSettings, is_finished, parse_last_event_id
from ingestapp.jobs.run import JobRegistry
from ingestapp.store.models import Item
from ingestapp.web import schemas
from ingestapp.web.body import json_body
from ingestapp.web.contract import responses, spec
from ingestapp.web.errors import ApiError, error_response

bp = Blueprint("api", __name__)

#: A body over INGEST_MAX_BODY but under this many bytes is read and discarded before the 413.
DISCARD_LIMIT = 1 << 30
def registry() -> JobRegistry:
    return current_app.extensions["ingest_jobs"]


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
    if exc.code == 413:
        return _too_large()
    return error_response(exc.code or 500, exc.description or exc.name, None)


def _too_large() -> Response:
    """413 for a body over ``INGEST_MAX_BODY``, decided from its length before any of it is parsed.

    The unread body is discarded in large reads (up to DISCARD_LIMIT bytes), so that a client
    which sends its whole body before reading gets this answer instead of a reset connection;
    past that, the connection is closed after the answer.
    """
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    response = error_response(413, f"the body is over {limit} bytes (INGEST_MAX_BODY)", None)
    length = request.content_length
    if length is None or length > DISCARD_LIMIT:
        response.headers["Connection"] = "close"
        return response
    stream = request.environ["wsgi.input"]
    while length > 0 and (chunk := stream.read(min(length, 1 << 20))):
        length -= len(chunk)
    return response


@bp.app_errorhandler(HTTPException)
def _routing_error(exc: HTTPException) -> Response | HTTPException:
    """Unknown routes and wrong methods under ``/api`` (raised before any blueprint is chosen)
    answer JSON too; pages keep Flask's HTML error pages."""
    if not request.path.startswith("/api/"):
        return exc
    response = error_response(exc.code or 500, exc.description or exc.name, None)
    if exc.code == 405 and isinstance(exc.valid_methods, list | tuple | set):
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return response


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


def session_urls(session_id: str) -> dict[str, str]:
    return {
        "session_id": session_id,
        "status_url": url_for("api.status", session_id=session_id),
        "stream_url": url_for("api.stream", session_id=session_id),
    }


# -- sessions -------------------------------------------------------------------------------------


@bp.post("/api/ingest/process")
@spec.validate(json=schemas.ProcessRequest, resp=responses(400, 403, 415, HTTP_202=schemas.SessionUrls),
               tags=["sessions"])
def process() -> tuple[Response, int]:
    """Start a session. 202 ``{"session_id", "status_url", "stream_url"}``; 400 on bad input."""
    parameters = parse_parameters(json_body(), registry().media_roots)
    session_id = registry().start(parameters, user_id=current_user.id)
    return jsonify(session_urls(session_id)), 202


@bp.get("/api/ingest/status/<session_id>")
@spec.validate(resp=responses(404, HTTP_200=schemas.State), tags=["sessions"])
def status(session_id: str) -> Response:
    check_session_access(session_id)
    return jsonify(registry().state(session_id))


@bp.post("/api/ingest/<session_id>/cancel")
@spec.validate(json=schemas.NoBody, resp=responses(400, 403, 404, 409, 415, HTTP_202=schemas.SessionUrls),
               tags=["sessions"])
def cancel(session_id: str) -> tuple[Response, int]:
    check_session_access(session_id)
    registry().cancel(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.post("/api/ingest/<session_id>/resume")
@spec.validate(json=schemas.NoBody, resp=responses(400, 403, 404, 409, 415, HTTP_202=schemas.SessionUrls),
               tags=["sessions"])
def resume(session_id: str) -> tuple[Response, int]:
    check_session_access(session_id)
    registry().resume(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.get("/api/ingest/sessions")
@spec.validate(query=schemas.SessionsQuery, resp=responses(400, HTTP_200=schemas.SessionList), tags=["sessions"])
def sessions() -> Response:
    """Sessions, newest first: ``{"sessions": [{session_id, status, created_at, directory, ...}]}``."""
    return jsonify(sessions=registry().sessions(request.context.query.limit, user_id=owner_filter()))


@bp.get("/api/ingest/<session_id>/items")
@spec.validate(query=schemas.ItemsQuery, resp=responses(400, 404, HTTP_200=schemas.ItemPage), tags=["sessions"])
def items(session_id: str) -> Response:
    """A page of the session's items, ``view`` = all | new | duplicates | errors | nsfw."""
    check_session_access(session_id)  # 404 for an unknown session or another user's
    page = request.context.query
    return jsonify(session_items(registry().engine, session_id, page.offset, page.limit, page.view))


@bp.get("/api/ingest/<session_id>/review")
@spec.validate(resp=responses(404, HTTP_200=schemas.Review), tags=["sessions"])
def review(session_id: str) -> Response:
    """The review step: ``{"counts", "excluded", "import_count", "imported", "import_offered"}``."""
    check_session_access(session_id)  # 404 for an unknown session or another user's
    return jsonify(session_review(registry().engine, session_id))


@bp.post("/api/ingest/<session_id>/exclusions")
@spec.validate(json=schemas.ExclusionsRequest, resp=responses(400, 403, 404, 415, HTTP_200=schemas.Review),
               tags=["sessions"])
def exclusions(session_id: str) -> Response:
    """Exclude items from the import (``"excluded": true``) or include them again, by ``ids`` or
    by ``view`` (every ok item of that review filter). Answers with the review, as ``/review``."""
    body = request.context.json.root
    check_session_access(session_id)  # 404 for an unknown session or another user's
    set_excluded(registry().engine, session_id, body.excluded, getattr(body, "ids", None), getattr(body, "view", None))
    return jsonify(session_review(registry().engine, session_id))


@bp.post("/api/ingest/<session_id>/commit")
@spec.validate(json=schemas.CommitRequest, resp=responses(400, 403, 404, 409, 415, HTTP_200=schemas.CommitResult),
               tags=["sessions"])
def commit(session_id: str) -> Response:
    """Write the session's ok items that are not excluded into the catalog:
    ``{"added", "updated", "excluded"}``. An ``exclude`` list replaces the stored exclusions;
    ``pairs`` (``both``, ``raw``, ``jpeg``) takes both items of each RAW+JPEG pair, or one."""
    exclude, pairs = request.context.json.exclude, PairImport(request.context.json.pairs)
    check_session_access(session_id)
    state = registry().state(session_id)
    if not is_finished(state) and state["status"] != "interrupted":
        raise JobConflict(f"the session is still {state['status']}")
    return jsonify(commit_session(registry().engine, session_id, None if exclude is None else set(exclude), pairs))


# -- the live stream --------------------------------------------------------------------------------


@bp.get("/api/ingest/stream/<session_id>")
@spec.validate(query=schemas.StreamQuery, resp=responses(400, 404), tags=["sessions"])
def stream(session_id: str) -> Response:
    """Server-Sent Events for one session (see ``stream.py``); 404 JSON for an unknown session."""
    check_session_access(session_id)
    last_event_id = parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    )
    config = current_app.config
    settings = StreamSettings(
        config["SSE_RETRY_MS"], config["SSE_KEEPALIVE"], config["SSE_MAX_AGE"], config["SSE_SEND_TIMEOUT"]
    )
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
@spec.validate(query=schemas.MetricsQuery, resp=responses(400, HTTP_200=schemas.Metrics), tags=["server"])
def metrics() -> Response:
    """This worker's stream counters, for admins (they name every user's sessions): ``scope``
    "worker" with its ``pid`` (each gunicorn worker answers for itself; ``GET /metrics`` sums them)
    and its event bus (``bus``: local | redis, ``bus_up``). ``?greenlets=1`` adds the live greenlet
    count (walks the heap: slow). 403 for other users."""
    if not current_user.is_admin:
        raise ApiError(403, "only admins see the stream metrics", None)
    result = {
        "scope": "worker",
        "pid": os.getpid(),
        **current_app.extensions["ingest_broker"].metrics(),
        **current_app.extensions["ingest_bus"].status(),
    }
    if request.context.query.greenlets == "1":
        result["greenlets"] = sum(isinstance(o, greenlet) and not o.dead for o in gc.get_objects())
    return jsonify(result)


# -- media roots and thumbnails ---------------------------------------------------------------------


@bp.get("/api/ingest/roots")
@spec.validate(resp=responses(HTTP_200=schemas.RootList), tags=["directories"])
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
@spec.validate(query=schemas.BrowseQuery, resp=responses(400, 403, 404, HTTP_200=schemas.Listing),
               tags=["directories"])
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
@spec.validate(resp=responses(404, HTTP_200=None), tags=["catalog"])
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
@spec.validate(query=schemas.CatalogQuery, resp=responses(400, HTTP_200=schemas.CatalogPage), tags=["catalog"])
def catalog() -> Response:
    """Catalog search: ``q`` (terms matched in path, keywords, camera, lens), ``keyword``,
    ``min_rating`` (-1 to 5), ``nsfw``, ``has_gps`` (true/false), ``media_type`` (image/video),
    ``taken_from``/``taken_to`` (YYYY-MM-DD), ``sort`` (added, taken, rating, score)."""
    query = parse_catalog_query(request.args)
    page = request.context.query
    return jsonify(query_catalog(registry().engine, query, page.offset, page.limit))


@bp.get("/api/catalog/keywords")
@spec.validate(query=schemas.KeywordsQuery, resp=responses(400, HTTP_200=schemas.KeywordList), tags=["catalog"])
def catalog_keywords() -> Response:
    """Keyword suggestions: ``{"keywords": [...]}`` starting with ``prefix``, most used first."""
    return jsonify(keywords=keyword_suggestions(registry().engine, request.context.query.prefix.strip()))


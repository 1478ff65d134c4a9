"""Sessions: start one, its state, cancel, resume, the list, and its live stream (SSE)."""

from __future__ import annotations

from flask import Response, current_app, jsonify, request
from flask_login import current_user

from ingestapp.accounts.auth import check_session_access, owner_filter
from ingestapp.events.sse import EventStream, StreamSettings, parse_last_event_id
from ingestapp.web.api.blueprint import bp, registry, session_urls
from ingestapp.web.contract import responses, spec
from ingestapp.web.schemas.requests import NoBody, ProcessRequest, SessionsQuery, StreamQuery
from ingestapp.web.schemas.responses import SessionList, SessionUrls, State


@bp.post("/api/ingest/process")
@spec.validate(json=ProcessRequest, resp=responses(400, 403, 415, HTTP_202=SessionUrls), tags=["sessions"])
def process() -> tuple[Response, int]:
    """Start a session. 202 ``{"session_id", "status_url", "stream_url"}``; 400 on malformed
    input; 403 for a directory outside the media roots (symlinks resolved) or unreadable."""
    body: ProcessRequest = request.context.json
    session_id = registry().start(body.ingest_parameters(), user_id=current_user.id)
    return jsonify(session_urls(session_id)), 202


@bp.get("/api/ingest/status/<session_id>")
@spec.validate(resp=responses(404, HTTP_200=State), tags=["sessions"])
def status(session_id: str) -> Response:
    check_session_access(session_id)
    return jsonify(registry().state(session_id))


@bp.post("/api/ingest/<session_id>/cancel")
@spec.validate(json=NoBody, resp=responses(400, 403, 404, 409, 415, HTTP_202=SessionUrls), tags=["sessions"])
def cancel(session_id: str) -> tuple[Response, int]:
    check_session_access(session_id)
    registry().cancel(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.post("/api/ingest/<session_id>/resume")
@spec.validate(json=NoBody, resp=responses(400, 403, 404, 409, 415, HTTP_202=SessionUrls), tags=["sessions"])
def resume(session_id: str) -> tuple[Response, int]:
    check_session_access(session_id)
    registry().resume(session_id)
    return jsonify(session_urls(session_id)), 202


@bp.get("/api/ingest/sessions")
@spec.validate(query=SessionsQuery, resp=responses(400, HTTP_200=SessionList), tags=["sessions"])
def sessions() -> Response:
    """Sessions, newest first: ``{"sessions": [{session_id, status, created_at, directory, ...}]}``."""
    return jsonify(sessions=registry().sessions(request.context.query.limit, user_id=owner_filter()))


@bp.get("/api/ingest/stream/<session_id>")
@spec.validate(query=StreamQuery, resp=responses(400, 404), tags=["sessions"])
def stream(session_id: str) -> Response:
    """Server-Sent Events for one session (see ``events/sse.py``); 404 JSON for an unknown session."""
    check_session_access(session_id)
    last_event_id = parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.context.query.last_event_id
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

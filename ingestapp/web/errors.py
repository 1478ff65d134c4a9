"""The one JSON error shape, ``{"error": message, "field": name or null}``, for every error the
API answers (README, "API"): ``error_response`` is the one place that builds it, and ``init_app``
registers the handlers that answer with it (``error_body`` is the shape itself, for the WSGI
middleware in ``slow_clients.py``, which answers before Flask is involved).

Under ``/api`` every error is JSON: an ``ApiError`` raised anywhere (the credentials check, the
request models, the routes), a session that is not there (404) or busy (409), Werkzeug's HTTP
errors (unknown routes, wrong methods, 413) and an untrusted Host (400). Pages keep Flask's HTML
error pages; ``ApiError`` is JSON wherever it is raised (``/metrics`` checks credentials with it).
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, SecurityError

from ingestapp.core.errors import ApiError, JobConflict, JobNotFound

#: A body over INGEST_MAX_BODY but under this many bytes is read and discarded before the 413.
DISCARD_LIMIT = 1 << 30


def error_body(message: str, field: str | None = None) -> dict[str, str | None]:
    """The JSON error body, ``{"error": message, "field": field}`` (both keys always)."""
    return {"error": message, "field": field}


def error_response(status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """``status`` with the JSON body of ``error_body``."""
    response = jsonify(error_body(message, field))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(JobNotFound, _not_found)
    app.register_error_handler(JobConflict, _conflict)
    app.register_error_handler(SecurityError, _untrusted_host)
    app.register_error_handler(HTTPException, _http_error)


def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.field, exc.headers)


def _not_found(_exc: JobNotFound) -> Response:
    return error_response(404, "no such session", "session_id")


def _conflict(exc: JobConflict) -> Response:
    return error_response(409, str(exc), None)


def _untrusted_host(_exc: SecurityError) -> Response | tuple[str, int]:
    """400 for a Host outside ``TRUSTED_HOSTS`` (DNS rebinding): JSON under /api, text elsewhere."""
    message = "this host name is not served here (INGEST_TRUSTED_HOSTS)"
    if request.path.startswith("/api/"):
        return error_response(400, message, "Host")
    return message, 400


def _http_error(exc: HTTPException) -> Response | HTTPException:
    """Werkzeug's HTTP errors under ``/api`` (unknown routes and wrong methods too, raised before
    any blueprint is chosen) answer JSON; pages keep Flask's HTML error pages."""
    if not request.path.startswith("/api/"):
        return exc
    if exc.code == 413:
        return _too_large()
    response = error_response(exc.code or 500, exc.description or exc.name, None)
    if exc.code == 405 and isinstance(exc.valid_methods, list | tuple | set):
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return response


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

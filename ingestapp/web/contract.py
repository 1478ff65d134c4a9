"""The OpenAPI 3.1 contract of ``/api``, built by spectree from the models in ``schemas/``.

``spec.validate(...)`` on each API route declares (and, for query strings and JSON bodies,
enforces) its request models and documents its response models. ``document()`` is the OpenAPI
document served at ``GET /api/openapi.json``; ``GET /api/docs`` renders it with Swagger UI from
the files the ``offapi`` package ships (no CDN), with its start-up script in ``static/`` so that it
runs under a ``script-src 'self'`` Content-Security-Policy.

Why spectree rather than APIFlask or flask-openapi3: see ``docs/api-contract.md``.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, make_response, render_template, request, url_for
from pydantic import BaseModel, ValidationError
from spectree import Response as Responses
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.plugins.base import Context
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.utils import get_multidict_items

from ingestapp.core.errors import ApiError
from ingestapp.core.vocabulary import EventType
from ingestapp.web.body import json_body
from ingestapp.web.errors import error_response
from ingestapp.web.schemas.events import EVENT_MODELS
from ingestapp.web.schemas.requests import REQUEST_FIELDS
from ingestapp.web.schemas.responses import ErrorBody

#: Declared for every operation: a token (``Authorization: Bearer``, RFC 6750) or the session cookie.
SECURITY_SCHEMES = [
    SecurityScheme(
        name="bearerAuth",
        data=SecuritySchemeData(type="http", scheme="bearer", description="an API token (`flask ingestapp tokens`)"),
    ),
    SecurityScheme(
        name="cookieAuth",
        data=SecuritySchemeData(type="apiKey", name="session", field_in="cookie", description="the signed-in session"),
    ),
]

#: The strict policy of the docs page: Swagger UI's files and start-up script are all same-origin.
DOCS_CSP = "default-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

#: Swagger UI files served at /api/docs/<name>, from the ``offapi`` package (swagger-ui-dist 5).
DOCS_ASSETS = {
    "swagger-ui.css": ("swagger_style.css", "text/css"),
    "swagger-ui-bundle.js": ("swagger_bundle.js", "text/javascript"),
}


class ApiFlaskPlugin(FlaskPlugin):
    """spectree's Flask plugin, with the changes this app needs.

    - Requests are validated once, here, with the app's media roots as the validation context
      (``schemas/requests.py`` checks directories and browse paths against them).
    - The JSON body is the one ``body.json_body`` parsed (size, depth and NaN limits; an empty
      body is ``{}``) instead of ``get_json(silent=True) or {}``, which turns ``[]`` or ``0`` into
      ``{}`` and malformed JSON into an empty object.
    - A query field holding a file name is read from the raw query string as ``os.fsdecode``
      reads names, so a directory whose name is not UTF-8 can be browsed.
    - Responses pass through untouched: spectree would read every response body to validate it,
      which never ends for the SSE stream and fails on a file sent with ``send_file``. The
      responses are checked against the contract by the tests instead (schemathesis, the stream
      tests), not on every request in production.
    """

    def request_validation(self, request: Any, query: Any, json: Any, form: Any, headers: Any, cookies: Any) -> None:
        context = {"media_roots": current_app.extensions["ingest_jobs"].media_roots}
        request.context = Context(
            query.model_validate(_query_items(request, query), context=context) if query else None,
            json.model_validate(json_body(), context=context) if json and request.method == "POST" else None,
            None,
            None,
            None,
        )

    def validate_response(self, resp: Any, resp_model: Any, skip_validation: bool, force_resp_serialize: bool):
        return make_response(resp), None


def _query_items(request: Any, model: Any) -> dict[str, Any]:
    """The query string as ``model`` reads it: text, but its ``file_name_fields`` as file names."""
    items = get_multidict_items(request.args, model)
    if model.file_name_fields:
        query = request.query_string.decode("utf-8", "surrogateescape")
        for key, value in parse_qsl(query, keep_blank_values=True, errors="surrogateescape"):
            if key in model.file_name_fields:
                items[key] = value
    return items


def _raise_api_error(req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any) -> None:
    """spectree's ``before`` hook: a request that fails its model is a 400 ``{error, field}``."""
    if isinstance(error, ValidationError):
        raise ApiError(400, *describe(error)) from None


def describe(error: ValidationError) -> tuple[str, str | None]:
    """The first error of a validation as ``(message, field)``: the innermost request field of its
    location (``max_files`` in ``parameters.max_files``), an unknown field itself, or None for
    the body as a whole."""
    first = error.errors(include_url=False)[0]
    loc = first["loc"]
    if first["type"] == "extra_forbidden":
        names = [str(loc[-1])]
    else:
        names = [part for part in loc if isinstance(part, str) and part in REQUEST_FIELDS]
    field = names[-1] if names else None
    text = first["msg"].removeprefix("Value error, ")
    message = text[0].lower() + text[1:]
    return (f"{field}: {message}" if field else message), field


spec = SpecTree(
    "flask",
    backend=ApiFlaskPlugin,
    title="ingestapp API",
    description="Ingest photo and video directories, watch the job live (Server-Sent Events), commit to a catalog.",
    version="1",
    mode="strict",
    page_templates={},
    annotations=False,
    security_schemes=SECURITY_SCHEMES,
    security=[{"bearerAuth": []}, {"cookieAuth": []}],
    validation_error_status=400,
    validation_error_model=ErrorBody,
    before=_raise_api_error,
    naming_strategy=lambda model: model.__name__,  # the models' own names (spectree adds a hash)
    nested_naming_strategy=lambda _parent, child: child,
)


def responses(*errors: int, **successes: Any) -> Responses:
    """A spectree ``Response``: ``HTTP_200=Model`` etc., and ``ErrorBody`` for each status in
    ``errors`` and for those every API route may answer: 401 (no or bad credentials) and 413 (a
    body over ``INGEST_MAX_BODY``)."""
    codes = {*errors, 401, 413}
    return Responses(**successes, **{f"HTTP_{code}": ErrorBody for code in sorted(codes)})


# -- the document ----------------------------------------------------------------------------------

bp = Blueprint("contract", __name__)


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document: spectree's, plus the SSE stream's ``text/event-stream`` response
    (one schema per event type, ``x-itemSchema`` as OpenAPI 3.2's ``itemSchema``) and the
    thumbnail's ``image/jpeg``, which spectree can only describe as JSON."""
    doc = copy.deepcopy(spec.spec)
    components = doc["components"]["schemas"]
    frames = []
    for event_type, model in EVENT_MODELS.items():
        _add_schema(components, model)
        frames.append(_frame_schema(event_type, model))
    stream = doc["paths"]["/api/ingest/stream/{session_id}"]["get"]
    stream["responses"]["200"] = {
        "description": "Server-Sent Events (WHATWG HTML §9.2): retry, a snapshot (or the replay after "
        "Last-Event-ID), then every event until a terminal one; `: keepalive` comments while idle.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "x-itemSchema": {"oneOf": frames},
            }
        },
    }
    stream["responses"]["204"] = {"description": "the session is finished and Last-Event-ID is its last event"}
    stream["parameters"].append(
        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "resume after this event id (the browser's EventSource sends it on reconnect)"}
    )
    thumbnail = doc["paths"]["/api/ingest/items/{item_id}/thumbnail"]["get"]
    thumbnail["responses"]["200"] = {
        "description": "the JPEG thumbnail (immutable: its name is its content hash)",
        "content": {"image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}},
    }
    return doc


def _add_schema(components: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    for name, nested in schema.pop("$defs", {}).items():
        components.setdefault(name, nested)
    components[model.__name__] = schema


def _frame_schema(event_type: str, model: type[BaseModel]) -> dict[str, Any]:
    """One SSE frame: its ``event`` name, its ``id`` and its ``data`` (one line of JSON)."""
    return {
        "title": event_type,
        "type": "object",
        "required": ["event", "data"] + ([] if event_type == EventType.SNAPSHOT else ["id"]),
        "properties": {
            "event": {"const": event_type},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
            },
        },
    }


@bp.get("/api/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of the API."""
    return current_app.json.response(document())


@bp.get("/api/docs")
def docs() -> Response:
    """Swagger UI for the document, every file served from here."""
    response = make_response(render_template("api_docs.html", spec_url=url_for("contract.openapi")))
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@bp.get("/api/docs/<name>")
def docs_asset(name: str) -> Response:
    """A Swagger UI file from the allowlist (looked up by name, never by a path from the request)."""
    if name not in DOCS_ASSETS:
        return error_response(404, "no such file", "name")
    filename, mimetype = DOCS_ASSETS[name]
    response = Response(_asset(filename), mimetype=mimetype)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response.make_conditional(request)


@cache
def _asset(filename: str) -> bytes:
    return (resources.files("offapi") / filename).read_bytes()

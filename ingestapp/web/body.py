"""The JSON request body, parsed once per request with limits (RFC 8259; size, depth, NaN)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import request

from ingestapp.core.errors import ApiError

#: JSON bodies nested deeper than this are refused (Python's parser would recurse into the C stack).
MAX_JSON_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_body() -> Any:
    """The parsed JSON body (parsed once per request); an empty body counts as ``{}``.

    Raises ApiError(400) for malformed JSON (RFC 8259), NaN or Infinity, numbers out of float
    range, lone surrogates (but U+DC80-U+DCFF, PEP 383 file name bytes), or nesting deeper than
    MAX_JSON_DEPTH; Werkzeug's RequestEntityTooLarge (413) for a body over ``INGEST_MAX_BODY``
    bytes, before any of it is read.
    """
    environ = request.environ  # per request (``g`` may outlive one, e.g. in tests)
    if "ingestapp.json_body" not in environ:
        data = request.get_data(cache=True)
        if request.content_length is None and len(data) >= (request.max_content_length or len(data) + 1):
            request.stream.read(1)  # a chunked body at the limit: raises 413 if there is more
        try:
            environ["ingestapp.json_body"] = parse_json(data) if data else {}
        except ValueError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", None) from None
    return environ["ingestapp.json_body"]


def parse_json(data: bytes) -> Any:
    """``json.loads`` with the limits of ``json_body``; raises ValueError naming the one broken."""
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    # Depth needs a walk only when there are enough brackets to exceed it.
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(data):
        # A lone surrogate is refused (UnicodeEncodeError, a ValueError), except U+DC80-U+DCFF: the
        # ``os.fsdecode`` form of a file name byte that is not UTF-8 (PEP 383), as browse lists it.
        json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogateescape")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest

"""The errors a request can meet: a session that is not there (404) or not in a state for the
request (409), and ``ApiError``, any other refusal, answered as JSON ``{"error", "field"}`` by
``web/errors.py`` (the one place that builds that body).
"""

from __future__ import annotations


class JobNotFound(LookupError):
    """No session with that id."""


class JobConflict(RuntimeError):
    """The session is not in a state that allows the request (e.g. resuming a running job)."""


class ApiError(Exception):
    """A refused request: answered with ``status`` and ``{"error": message, "field": field}``.

    ``status`` follows RFC 9110 §15.5: 400 for malformed input, 401 for missing credentials, 403
    for a well-formed request that is not allowed (e.g. a directory outside the media roots).
    ``headers`` are added to the answer (``WWW-Authenticate`` with a 401).
    """

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}

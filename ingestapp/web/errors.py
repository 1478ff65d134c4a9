"""The one JSON error shape, ``{"error": message, "field": name or null}``, for every error the
API answers (README, "API"): ``ApiError`` to raise one, ``error_response`` to build one.
"""

from __future__ import annotations

from flask import Response, jsonify


class ApiError(Exception):
    """An error answered as ``{"error": message, "field": field}`` with ``status``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def error_response(status: int, message: str, field: str | None = None) -> Response:
    response = jsonify(error=message, field=field)
    response.status_code = status
    return response

"""The errors a request about a session can meet: the API and pages answer them with 404 and 409."""

from __future__ import annotations


class JobNotFound(LookupError):
    """No session with that id."""


class JobConflict(RuntimeError):
    """The session is not in a state that allows the request (e.g. resuming a running job)."""

"""Slow clients cost little and end: a deadline for request bodies, and a bound on the connections
that carry no credentials (issue "No one can stall the server"; docs/security.md, "Limits").

gunicorn's gevent worker times out a request's headers (its keep-alive wait) but never its body:
a client announcing ``Content-Length: 100000`` and sending a byte every few seconds holds a
connection, a greenlet and its buffers for as long as it likes. ``SlowClientGuard`` wraps the WSGI
app (outside Flask, so it sees every request):

- **Body deadline.** ``wsgi.input`` becomes a reader whose reads must complete by ``start +
  INGEST_BODY_TIMEOUT + length / INGEST_BODY_MIN_RATE`` (seconds; the rate in bytes/s, so a large
  body on a slow but honest link still arrives). Past it the read raises ``BodyTimeout``, a 408
  (``werkzeug.exceptions.RequestTimeout``) that Flask answers like any HTTP error (JSON
  ``{error, field}`` under ``/api``).
- **Close what was not read.** Once the response to a request whose body was not read to its end
  is written, the connection is closed in stages (``_shut``): otherwise gunicorn would read and
  discard the rest before the next request on the connection, with no deadline at all. (gunicorn
  drops a ``Connection`` header set by the app, so the socket, ``gunicorn.socket``, is shut
  instead.)
- **Bounded anonymous connections.** Requests without credentials (no ``Authorization`` header and
  no session cookie) may be in progress at most ``INGEST_MAX_ANONYMOUS`` at once per worker; the
  next one is answered 503 at once, before anything is read, and its connection closed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from werkzeug.exceptions import RequestTimeout
from werkzeug.wsgi import ClosingIterator

from ingestapp.web.errors import error_body

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BodyTimeout(RequestTimeout):
    """408: the request body did not arrive by its deadline."""

    description = "the request body did not arrive in time (INGEST_BODY_TIMEOUT)"


class DeadlineInput:
    """``wsgi.input`` with a deadline (``time.monotonic()`` seconds) on every read; counts the
    bytes read so the guard knows whether the body was read to its end."""

    def __init__(self, stream: Any, deadline: float, length: int | None) -> None:
        self._stream = stream
        self._deadline = deadline
        self.length = length
        self.received = 0
        self.ended = False  # a read returned nothing: the body is over

    def _call(self, method: Callable[..., bytes], *args: Any) -> bytes:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise BodyTimeout()
        with gevent.Timeout(remaining, BodyTimeout()):
            data = method(*args)
        self.received += len(data)
        self.ended = self.ended or not data
        return data

    def read(self, size: int = -1) -> bytes:
        return self._call(self._stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._call(self._stream.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    @property
    def complete(self) -> bool:
        """The whole body was read (by its length, or to its end when chunked)."""
        return self.ended or (self.length is not None and self.received >= self.length)


class SlowClientGuard:
    """The WSGI middleware of the module docstring.

    Args:
        app: the WSGI app it wraps.
        body_timeout: seconds every body gets, whatever its size.
        min_rate: bytes per second a body must arrive at, on top of ``body_timeout``.
        max_anonymous: requests without credentials in progress at once (this worker).
        session_cookie: the session cookie's name (a request carrying it counts as signed in here;
            the app checks it properly later).
    """

    def __init__(self, app: WSGIApp, body_timeout: float, min_rate: float, max_anonymous: int,
                 session_cookie: str) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.min_rate = min_rate
        self.max_anonymous = max_anonymous
        self.session_cookie = session_cookie + "="
        self.anonymous = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        anonymous = "HTTP_AUTHORIZATION" not in environ and self.session_cookie not in environ.get("HTTP_COOKIE", "")
        if anonymous and self.anonymous >= self.max_anonymous:
            return _refuse(environ, start_response)
        body = self._guard_body(environ)
        if anonymous:
            self.anonymous += 1

        def finish() -> None:
            if anonymous:
                self.anonymous -= 1
            if body is not None and not body.complete:
                _shut(environ, linger=True)

        try:
            response = self.app(environ, start_response)
        except BaseException:
            finish()
            raise
        return ClosingIterator(response, finish)

    def _guard_body(self, environ: dict[str, Any]) -> DeadlineInput | None:
        length, chunked = _body_framing(environ)
        if not length and not chunked:
            return None
        deadline = time.monotonic() + self.body_timeout + (length or 0) / self.min_rate
        body = DeadlineInput(environ["wsgi.input"], deadline, length)
        environ["wsgi.input"] = body
        return body



def _refuse(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body = json.dumps(error_body("too many connections without credentials; try again")).encode()
    start_response("503 Service Unavailable", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Retry-After", "1"),
    ])
    length, chunked = _body_framing(environ)
    return ClosingIterator([body], lambda: _shut(environ, linger=bool(length) or chunked))


def _body_framing(environ: dict[str, Any]) -> tuple[int | None, bool]:
    """The request body's announced length in bytes (None: none, or not a number) and whether it
    is sent chunked (RFC 9112 §6)."""
    length_header = environ.get("CONTENT_LENGTH")
    length = int(length_header) if length_header and length_header.isdigit() else None
    return length, "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


#: A refused body's connection is read and dropped this long at most before it is closed.
LINGER = 2.0  # seconds in all
LINGER_IDLE = 0.5  # seconds without a byte from the client


def _shut(environ: dict[str, Any], linger: bool) -> None:
    """End the connection once the response is written; with ``linger`` (a body is still
    arriving), in stages, so the client reads the response.

    Closing a socket that still has unread bytes (the rest of a refused body) resets the
    connection, and a client still sending loses the response (a 413) to the reset, or waits on a
    full window. So the write side is shut first (the client reads the response, then EOF), what
    the client still sends is read and dropped until it closes, for at most ``LINGER`` seconds, or
    ``LINGER_IDLE`` without a byte, and only then is the socket shut. This is the staged close of
    RFC 9112 §9.6 (nginx's ``lingering_close``). Without a body there is nothing to read: a refused
    anonymous request without one is closed at once, holding nothing during a flood."""
    client = environ.get("gunicorn.socket")
    if client is None:
        return
    if linger:
        with contextlib.suppress(OSError):  # a timeout too: socket.timeout is an OSError
            _drain(client)
    with contextlib.suppress(OSError):
        client.shutdown(socket.SHUT_RDWR)


def _drain(client: socket.socket) -> None:
    """Shut the write side, then read and drop until the client closes, ``LINGER`` seconds have
    passed or ``LINGER_IDLE`` went by without a byte (raises socket.timeout then)."""
    client.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + LINGER
    while (remaining := deadline - time.monotonic()) > 0:
        client.settimeout(min(LINGER_IDLE, remaining))  # a gevent socket: the hub goes on
        if not client.recv(65536):
            return

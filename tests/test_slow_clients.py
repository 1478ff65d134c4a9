"""Slow clients cost little and end (issue 16, points 1 and 9), against a real gunicorn: a body
that does not arrive in time is answered 408 and its connection closed; connections without
credentials are bounded; other clients are served meanwhile; forwarded headers are believed only
from configured proxies."""

from __future__ import annotations

import importlib.util
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import REPO, Server, gunicorn

SLOW = {"INGEST_BODY_TIMEOUT": "1", "INGEST_BODY_MIN_RATE": "1000000", "INGEST_MAX_ANONYMOUS": "20"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("slow")
    (base / "media").mkdir()
    with gunicorn(base / "instance", base / "media", SLOW) as running:
        running.request("GET", "/login", anonymous=True)  # warm: the first request imports lazily
        yield running


def slow_post(server: Server, path: str = "/login", headers: str = "",
              content_type: str = "application/x-www-form-urlencoded") -> socket.socket:
    """A POST announcing 100,000 bytes of body and sending 10 of them."""
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: 100000\r\n{headers}\r\nusername=a".encode()
    )
    return conn


def read_until_closed(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


@pytest.mark.server
def test_a_body_that_does_not_arrive_in_time_is_408_and_closed(server: Server) -> None:
    conn = slow_post(server)
    try:
        started = time.monotonic()
        answer = read_until_closed(conn)  # returns only once the server closes the connection
        waited = time.monotonic() - started
    finally:
        conn.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.8 <= waited < 8  # the 1 s deadline, and room for a loaded machine


@pytest.mark.server
def test_an_api_body_timeout_is_json(server: Server) -> None:
    conn = slow_post(server, "/api/ingest/process", f"Authorization: Bearer {server.token}\r\n", "application/json")
    try:
        answer = read_until_closed(conn)
    finally:
        conn.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b'"error"' in body and b'"field"' in body


@pytest.mark.server
def test_anonymous_connections_are_bounded_and_others_are_served(server: Server) -> None:
    held = [slow_post(server) for _ in range(20)]
    try:
        time.sleep(0.2)  # all twenty are in the app, reading their bodies
        extra = slow_post(server)
        try:
            refused = read_until_closed(extra)
        finally:
            extra.close()
        assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
        started = time.monotonic()
        status, _ = server.request("GET", "/api/ingest/roots")  # a client with credentials
        assert status == 200
        assert time.monotonic() - started < 0.5
        answers = [read_until_closed(conn) for conn in held]  # each ends at its deadline
    finally:
        for conn in held:
            conn.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)
    status, _ = server.request("GET", "/login", anonymous=True)  # the slots are free again
    assert status == 200


@pytest.mark.server
def test_forwarded_proto_is_not_believed_without_proxies(server: Server) -> None:
    """INGEST_PROXIES=0 (the fixture's): X-Forwarded-Proto from 127.0.0.1 changes nothing."""
    status, headers, _ = raw_get(server, "/login", {"X-Forwarded-Proto": "https"})
    assert status == 200
    assert "strict-transport-security" not in headers
    assert "secure" not in headers.get("set-cookie", "").lower()


def raw_get(server: Server, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_worker_connections_stay_below_the_open_files_limit() -> None:
    spec = importlib.util.spec_from_file_location("gunicorn_conf", Path(REPO) / "gunicorn.conf.py")
    assert spec and spec.loader
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert conf.worker_connections <= soft - 1024 or conf.worker_connections == 64
    assert conf.forwarded_allow_ips in ("", "127.0.0.1,::1")

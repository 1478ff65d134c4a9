"""Helpers for the browser and nginx tests: tool checks, sample media, a TCP proxy that can cut,
and a browser whose contexts are signed in and fail the test on any CSP violation."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def require(available: bool, reason: str) -> None:
    """Skip the test when a system tool is missing; fail instead when CI demands the tools."""
    if available:
        return
    if os.environ.get("INGEST_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(f"{reason} (INGEST_REQUIRE_SYSTEM_TOOLS=1)")
    pytest.skip(reason)


def require_chromium() -> None:
    require(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is not installed")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "the playwright package is not installed")


def nginx_binary() -> str:
    """The nginx executable (PATH, then /usr/sbin); skips or fails when there is none."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    require(found is not None, "nginx is not installed")
    return str(found)


# -- sample media -------------------------------------------------------------------------------


#: Broken JPEGs with names a page must escape (quotes, <, &, a newline). No "/" (a separator).
HOSTILE_NAMES = (
    "camera/a <b>\"quoted\" & 'x'.jpg",
    "graphics/line\nbreak <img src=x onerror=window.__xss=1>.jpg",
    "tagged/z<script>window.__xss=2<.jpg",
    "camera/rlo \u202egpj.exe.jpg",  # a right-to-left override must not reorder the page around it
    "tagged/caf\udce9.jpg",  # os.fsdecode(b"caf\xe9.jpg"): not UTF-8, shown as caf\xe9.jpg
)


def write_media(directory: Path, copies: int = 1, hostile: bool = True, broken_per_copy: int = 0) -> int:
    """Write ``copies`` sample sets (``directory/c0``, ``c1``, ...) and extra broken files.

    Every broken file gets unique bytes, so duplicate detection never hides its error. Returns
    the number of media files written.
    """
    from ingestapp.cli.samples import write_samples  # imported late: it pulls in av and numpy

    count = 0
    for n in range(copies):
        target = directory / f"c{n}" if copies > 1 else directory
        count += len(write_samples(target))
        corrupt = (target / "corrupt.jpg").read_bytes()
        names = list(HOSTILE_NAMES if hostile and n == 0 else ())
        names += [f"{sub}/broken_{n}_{i}.jpg" for i, sub in enumerate(("camera", "graphics", "tagged", "video"))][
            :broken_per_copy
        ]
        for i, name in enumerate(names):
            (target / name).write_bytes(corrupt + f"{directory.name}-{n}-{i}".encode())
        count += len(names)
    return count


# -- a TCP proxy the test can cut -------------------------------------------------------------------


class CuttableProxy:
    """A threaded TCP proxy to ``127.0.0.1:target``. ``cut()`` drops every open connection (the
    browser sees its stream break) and can refuse new ones for a while (the network is gone).
    With ``hold_streams`` it is a buffering proxy: an event stream's response never gets through
    (not even its headers), everything else does."""

    def __init__(self, target_port: int, hold_streams: bool = False) -> None:
        self.target_port = target_port
        self.hold_streams = hold_streams
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refuse_until = 0.0
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    def retarget(self, target_port: int) -> None:
        """Send new connections to another port (a restarted server behind the same origin)."""
        self.target_port = target_port

    def cut(self, refuse_for: float = 0.0) -> None:
        """Close every open connection; refuse new ones for ``refuse_for`` seconds."""
        with self._lock:
            self._refuse_until = time.monotonic() + refuse_for
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self.listener)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refuse_until:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
                self.accepted += 1
            for source, sink, hold in ((client, upstream, False), (upstream, client, self.hold_streams)):
                threading.Thread(target=self._pump, args=(source, sink, hold), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, hold_streams: bool) -> None:
        holding = False
        try:
            while data := source.recv(65536):
                holding = holding or (hold_streams and b"text/event-stream" in data)
                if not holding:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# -- accessibility ----------------------------------------------------------------------------------

#: axe-core impacts a page must not have (https://github.com/dequelabs/axe-core/blob/develop/doc/API.md).
BLOCKING_IMPACTS = ("serious", "critical")


def assert_accessible(page: object, name: str) -> None:
    """Run axe-core (bundled by the axe-playwright-python package) in ``page``; fail on any
    serious or critical violation, listing each rule and the elements it flagged. Runs with
    reduced motion, so a counter caught mid-highlight (a 0.3 s fade) is judged at rest."""
    from axe_playwright_python.sync_playwright import Axe

    page.emulate_media(reduced_motion="reduce")  # type: ignore[attr-defined]
    try:
        results = Axe().run(page)
    finally:
        page.emulate_media(reduced_motion="no-preference")  # type: ignore[attr-defined]
    blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING_IMPACTS]
    report = "\n".join(
        f"{v['impact']}: {v['id']} ({v['help']}) at {[node['target'] for node in v['nodes']][:5]}" for v in blocking
    )
    assert not blocking, f"axe-core on {name}:\n{report}"


# -- a signed-in browser that reports CSP violations -------------------------------------------------

#: Every Content-Security-Policy violation becomes a console error the context listener collects
#: (Chromium's own "Refused to ..." console messages are collected as well).
REPORT_CSP_JS = """document.addEventListener('securitypolicyviolation', (e) => console.error(
  `CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`));"""


def sign_in(page: Any, base: str, username: str, password: str) -> None:
    """Sign in through the /login form the way a person does (labels and button by name)."""
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


class SignedInBrowser:
    """A Playwright browser whose ``new_context()`` is signed in to ``base`` (one /login per
    browser, then the stored cookie) and records CSP violations in ``csp_violations``.
    ``new_context(signed_in=False)`` gives a signed-out context (still watched)."""

    def __init__(self, browser: Any, base: str, username: str, password: str) -> None:
        self.browser = browser
        self.csp_violations: list[str] = []
        first = self.new_context(signed_in=False)
        try:
            page = first.new_page()
            sign_in(page, base, username, password)
            self.storage_state = first.storage_state()
        finally:
            first.close()

    def new_context(self, signed_in: bool = True, **options: Any) -> Any:
        if signed_in:
            options.setdefault("storage_state", self.storage_state)
        context = self.browser.new_context(**options)
        context.add_init_script(REPORT_CSP_JS)
        context.on("console", self._on_console)
        return context

    def _on_console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or message.text.startswith("CSP violation"):
            self.csp_violations.append(message.text)

    def check_csp(self) -> None:
        """Fail (and forget) if any page broke the Content-Security-Policy since the last check."""
        violations, self.csp_violations = self.csp_violations, []
        assert violations == [], violations

    def __getattr__(self, name: str) -> Any:
        return getattr(self.browser, name)


@contextlib.contextmanager
def signed_in_chromium(base: str, username: str, password: str) -> Iterator[SignedInBrowser]:
    """Debian's Chromium (Playwright), signed in to ``base`` once (``SignedInBrowser``); closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield SignedInBrowser(chromium, base, username, password)
        finally:
            chromium.close()

"""Sign-in, sign-out and the Content-Security-Policy in headless Chromium against the real gunicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import SignedInBrowser, require_chromium, signed_in_chromium
from tests.factories import write_jpegs
from tests.servers import Server, gunicorn

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_chromium()
    root = tmp_path_factory.mktemp("security-media")
    write_jpegs(root / "set", 3)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Server]:
    with gunicorn(tmp_path_factory.mktemp("security-instance"), media) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[SignedInBrowser]:
    with signed_in_chromium(base(server), server.username, server.password) as browser:
        yield browser


def base(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_every_page_keeps_to_the_csp(server: Server, browser: SignedInBrowser, media: Path) -> None:
    """The pages load their scripts, styles and thumbnails with no CSP violation, and a violation
    would be caught: the shared hook reports one an injected inline style causes."""
    body = {"parameters": {"directory": str(media / "set"), "enable_nsfw_detection": False}}
    session_id = server.request("POST", "/api/ingest/process", body)[1]["session_id"]
    server.wait_for_status(session_id, {"completed"})
    assert server.request("POST", f"/api/ingest/{session_id}/commit", {})[0] == 200
    context = browser.new_context()
    try:
        page = context.new_page()
        for path in ("/", "/sessions", "/catalog", f"/ingest/{session_id}"):
            page.goto(base(server) + path, wait_until="networkidle")
            assert page.url == base(server) + path
        page.locator("#preview-grid .item img").first.wait_for()
        assert page.evaluate("getComputedStyle(document.querySelector('#overall-bar .bar-fill')).transform") != "none"
        page.goto(base(server) + "/catalog", wait_until="networkidle")
        assert page.evaluate("[...document.images].every((i) => i.complete && i.naturalWidth > 0)")
        browser.check_csp()

        page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
        page.wait_for_timeout(200)
        assert any("style-src" in v for v in browser.csp_violations), browser.csp_violations
        browser.csp_violations.clear()
    finally:
        context.close()


def test_sign_in_comes_back_and_sign_out_leaves(server: Server, browser: SignedInBrowser) -> None:
    context = browser.new_context(signed_in=False)
    try:
        page = context.new_page()
        page.goto(base(server) + "/sessions")
        assert page.url.startswith(base(server) + "/login?next=")
        page.get_by_label("Username").fill(server.username)
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        assert "Wrong username or password." in page.get_by_role("alert").text_content()

        page.get_by_label("Username").fill(server.username)
        page.get_by_label("Password").fill(server.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(base(server) + "/sessions")
        cookie = next(c for c in context.cookies() if c["name"] == "session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain HTTP here

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(lambda url: "/login" in url)
        page.goto(base(server) + "/catalog")
        assert "/login" in page.url
        status = page.evaluate("async () => (await fetch('/api/ingest/sessions')).status")
        assert status == 401
        browser.check_csp()
    finally:
        context.close()


#: Notes in sessionStorage (it outlives the navigation to /login) whether an EventSource was
#: closed while the Sign out form's submit event was being dispatched, before the form was sent.
WATCH_SIGN_OUT_JS = """
window.addEventListener('submit', (event) => {
  if (event.target.matches('form.signout')) window.signingOut = true;
}, true);
const close = EventSource.prototype.close;
EventSource.prototype.close = function () {
  if (window.signingOut && this.readyState !== EventSource.CLOSED) sessionStorage.setItem('closedOnSignOut', this.url);
  return close.call(this);
};
"""


def test_sign_out_closes_the_pages_stream_before_the_form_is_sent(server: Server, browser: SignedInBrowser,
                                                                   media: Path) -> None:
    """Issue 16, point 10's nicety: the session page closes its EventSource before the Sign out
    form goes (the server ends the stream anyway: tests/test_stream_principals.py)."""
    body = {"parameters": {"directory": str(media / "set"), "enable_nsfw_detection": False, "watch": True}}
    session_id = server.request("POST", "/api/ingest/process", body)[1]["session_id"]
    context = browser.new_context(signed_in=False)  # a sign-in of its own: the shared one stays
    try:
        context.add_init_script(WATCH_SIGN_OUT_JS)
        page = context.new_page()
        page.goto(base(server) + f"/ingest/{session_id}")
        page.get_by_label("Username").fill(server.username)
        page.get_by_label("Password").fill(server.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(base(server) + f"/ingest/{session_id}")
        page.locator('[data-connection="live"]').wait_for()
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(lambda url: "/login" in url)
        closed = page.evaluate("sessionStorage.getItem('closedOnSignOut')")
        assert closed and f"/api/ingest/stream/{session_id}" in closed
        browser.check_csp()
    finally:
        context.close()
        server.request("POST", f"/api/ingest/{session_id}/cancel", {})

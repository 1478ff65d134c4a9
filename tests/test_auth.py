"""Accounts, tokens and the hardened surface through the Flask test client: 401/403/400, CSRF,
Origin, Host, security headers, sign-in limits, ownership, the first-start setup link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select, update

from ingestapp import create_app, shutdown
from ingestapp.accounts import users
from ingestapp.accounts.users import create_token, revoke_token
from ingestapp.store.models import User
from tests.auth_support import ADMIN, PASSWORD, add_user, csrf_token, new_token, sign_in
from tests.factories import start, wait_for, write_jpegs
from tests.servers import REPO

API_GETS = (
    "/api/ingest/sessions",
    "/api/ingest/status/{sid}",
    "/api/ingest/{sid}/items",
    "/api/ingest/stream/{sid}",
    "/api/ingest/items/{item}/thumbnail",
    "/api/ingest/metrics",
    "/api/ingest/roots",
    "/api/catalog",
    "/metrics",
)
API_POSTS = ("/api/ingest/process", "/api/ingest/{sid}/cancel", "/api/ingest/{sid}/resume", "/api/ingest/{sid}/commit")
PAGES = ("/", "/sessions", "/catalog", "/ingest/{sid}")


@pytest.fixture
def finished(client, app: Flask, media: Path) -> dict[str, str]:
    """A completed session of the test admin and one of its items with a thumbnail."""
    write_jpegs(media, 2)
    sid = start(client, media)
    wait_for(app, sid, {"completed"})
    item = next(i for i in client.get(f"/api/ingest/{sid}/items").get_json()["items"] if i["thumbnail_url"])
    return {"sid": sid, "item": item["id"]}


def assert_401(response, invalid_token: bool = False) -> None:
    assert response.status_code == 401, response.data
    assert response.get_json()["field"] == "Authorization" and response.get_json()["error"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and ('error="invalid_token"' in challenge) == invalid_token


def test_no_credentials_401_for_the_api_and_a_sign_in_redirect_for_pages(anon_client, finished) -> None:
    for url in API_GETS:
        assert_401(anon_client.get(url.format(**finished)))
    for url in API_POSTS:
        assert_401(anon_client.post(url.format(**finished), json={}))
    for url in PAGES:
        path = url.format(**finished) + "?x=1"
        response = anon_client.get(path)
        assert response.status_code == 302
        location = urlsplit(response.location)
        assert location.path == "/login" and parse_qs(location.query) == {"next": [path]}


def test_wrong_revoked_and_expired_tokens_are_401(app: Flask, finished) -> None:
    engine = app.extensions["ingest_db"]
    url = f"/api/ingest/status/{finished['sid']}"
    assert app.test_client().get(url).status_code == 200
    assert_401(app.test_client(token="ingest_not-a-token").get(url), invalid_token=True)
    for header in ("Basic YWRtaW46eA==", "Bearer", "Bearer "):
        assert_401(app.test_client(token=None).get(url, headers={"Authorization": header}), invalid_token=True)

    token_id, token = create_token(engine, ADMIN, "to revoke")
    client = app.test_client(token=token)
    assert client.get(url).status_code == 200
    revoke_token(engine, token_id)
    assert_401(client.get(url), invalid_token=True)

    expired = new_token(engine, expires_days=1e-9)
    assert_401(app.test_client(token=expired).get(url), invalid_token=True)


def test_a_bad_token_is_not_rescued_by_a_valid_cookie(cookie_client, finished) -> None:
    url = f"/api/ingest/status/{finished['sid']}"
    assert cookie_client.get(url).status_code == 200
    assert_401(cookie_client.get(url, headers={"Authorization": "Bearer wrong"}), invalid_token=True)


def test_a_new_password_or_a_deleted_user_ends_cookie_sign_ins(app: Flask, cookie_client) -> None:
    from ingestapp.accounts.users import delete_user, set_password

    engine = app.extensions["ingest_db"]
    assert cookie_client.get("/api/ingest/sessions").status_code == 200
    set_password(engine, ADMIN, "a brand new password")
    assert_401(cookie_client.get("/api/ingest/sessions"))
    assert cookie_client.get("/sessions").status_code == 302
    assert sign_in(cookie_client, ADMIN, "a brand new password").status_code == 302
    assert cookie_client.get("/api/ingest/sessions").status_code == 200
    delete_user(engine, ADMIN)
    assert_401(cookie_client.get("/api/ingest/sessions"))


def test_signing_out_refuses_that_sign_ins_cookie_and_its_copies_only(app: Flask) -> None:
    """Issue 16, point 10: a sign-out is recorded on the server, so a copy of the cookie (taken
    before it) stops working too, while the user's other browsers stay signed in."""
    leaving, staying, thief = (app.test_client(token=None) for _ in range(3))
    for client in (leaving, staying):
        assert sign_in(client).status_code == 302
    thief.set_cookie("session", leaving.get_cookie("session").value)
    assert thief.get("/api/ingest/sessions").status_code == 200  # a copy works while the sign-in lasts
    assert leaving.post("/logout", data={"csrf_token": csrf_token(leaving)}).status_code == 302
    for signed_out in (leaving, thief):
        assert_401(signed_out.get("/api/ingest/sessions"))
        assert signed_out.get("/sessions").status_code == 302
    assert staying.get("/api/ingest/sessions").status_code == 200
    assert staying.post("/logout", data={"csrf_token": csrf_token(staying)}).status_code == 302
    assert staying.get("/sessions").status_code == 302


def test_a_sign_in_cookie_holds_an_id_a_time_and_the_password_fingerprint(app: Flask) -> None:
    """What the user loader accepts (``users.browser_account``): this release's four fields, a
    sign-in younger than INGEST_SIGN_IN_MAX_AGE that was not signed out; sign-outs are pruned once
    no cookie they stop could still be valid."""
    from sqlalchemy import func, insert, select

    from ingestapp.accounts.signins import record_sign_out
    from ingestapp.accounts.users import browser_account, find_user
    from ingestapp.store.models import SignOut

    engine, day = app.extensions["ingest_db"], 86400.0
    account = find_user(engine, username=ADMIN).signed_in()
    assert account.sign_in is not None and len(account.sign_in.id) == 22
    assert browser_account(engine, account.get_id(), day) == account
    user_id, fingerprint, sign_in_id, _ = account.get_id().split(":")
    for refused in (f"{user_id}:{fingerprint}",  # an earlier release's cookie: no sign-in to sign out
                    f"{user_id}:{fingerprint}:{sign_in_id}:{int(time.time() - 2 * day)}",  # too old
                    f"{user_id}:{fingerprint}:{sign_in_id}:{int(time.time() + day)}",  # from the future
                    f"{user_id}:wrong:{sign_in_id}:{account.sign_in.at}", f"{user_id}:{fingerprint}::0"):
        assert browser_account(engine, refused, day) is None, refused
    with engine.begin() as conn:  # a sign-out older than any sign-in may last
        conn.execute(insert(SignOut).values(sign_in_id="old", signed_out_at=time.time() - 2 * day))
    record_sign_out(engine, account.sign_in.id, day)
    record_sign_out(engine, account.sign_in.id, day)  # a second click: harmless
    assert browser_account(engine, account.get_id(), day) is None
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SignOut)) == 1  # "old" was pruned


def test_cookie_changes_need_the_csrf_header_tokens_do_not(cookie_client, client, media: Path) -> None:
    write_jpegs(media, 1)
    body = {"directory": str(media), "enable_nsfw_detection": False}
    response = cookie_client.post("/api/ingest/process", json=body, headers={"X-CSRFToken": ""})
    assert response.status_code == 403 and response.get_json()["field"] == "X-CSRFToken"
    response = cookie_client.post("/api/ingest/process", json=body, headers={"X-CSRFToken": "forged"})
    assert response.status_code == 403 and response.get_json()["field"] == "X-CSRFToken"
    assert cookie_client.post("/api/ingest/process", json=body).status_code == 202  # the header it got from a page
    assert client.post("/api/ingest/process", json=body).status_code == 202  # a token: no CSRF token needed
    assert cookie_client.get("/api/ingest/sessions").status_code == 200  # reads need none


def test_origin_must_match_scheme_host_and_port(client, media: Path) -> None:
    body = {"directory": str(media)}
    for origin in ("https://localhost", "http://localhost:8080", "http://127.0.0.1", "null", "http://localhost:x"):
        response = client.post("/api/ingest/process", json=body, headers={"Origin": origin})
        assert response.status_code == 403 and response.get_json()["field"] == "Origin", origin
    for origin in ("http://localhost", "http://localhost:80", "HTTP://LOCALHOST"):
        assert client.post("/api/ingest/process", json=body, headers={"Origin": origin}).status_code == 202, origin


def test_untrusted_host_is_400_even_with_a_matching_origin(client, anon_client, media: Path) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1 and its page posts with a matching Origin."""
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    response = client.post("/api/ingest/process", json={"directory": str(media)}, headers=rebound)
    assert response.status_code == 400 and response.get_json()["field"] == "Host"
    assert client.get("/api/ingest/sessions", headers={"Host": "evil.example:8000"}).status_code == 400
    assert anon_client.get("/login", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/ingest/sessions", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_trusted_hosts_setting(app_config: dict, monkeypatch) -> None:
    monkeypatch.setenv("INGEST_BIND", "192.168.1.5:8000")
    monkeypatch.delenv("INGEST_TRUSTED_HOSTS", raising=False)
    from ingestapp.core.config import load_config

    assert load_config(app_config)["TRUSTED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]", "192.168.1.5"]
    monkeypatch.setenv("INGEST_TRUSTED_HOSTS", "ingest.example.com, .lan")
    assert load_config(app_config)["TRUSTED_HOSTS"] == ["ingest.example.com", ".lan"]


def test_security_headers_on_every_page(cookie_client, anon_client, finished) -> None:
    responses = [cookie_client.get(url.format(**finished)) for url in PAGES]
    responses += [anon_client.get("/login"), cookie_client.get("/api/ingest/sessions")]
    for response in responses:
        assert response.status_code == 200
        csp = dict(d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";"))
        assert csp["default-src"] == "'self'" and csp["img-src"] == "'self' data:"
        assert csp["frame-ancestors"] == "'none'"
        assert "unsafe" not in csp["script-src"] and "unsafe" not in csp.get("style-src", "")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert "camera=()" in response.headers["Permissions-Policy"]
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP
        if response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            assert not re.search(r"<script(?![^>]*\b(src=|type=\"application/json\"))", page), "inline script"
            assert " style=" not in page, "a style attribute (style-src 'self' blocks it)"


def test_tls_gets_hsts_and_a_secure_cookie(app: Flask) -> None:
    client = app.test_client(token=None)
    page = client.get("/login", base_url="https://localhost")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = page.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    plain = app.test_client(token=None).get("/login")
    assert "Secure" not in plain.headers["Set-Cookie"] and "HttpOnly" in plain.headers["Set-Cookie"]


def test_forwarded_proto_is_believed_only_with_ingest_proxies(app_config: dict) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    for proxies, secure in ((0, False), (1, True)):
        app = create_app({**app_config, "PROXIES": proxies})
        try:
            response = app.test_client(token=None).get("/login", headers=forwarded)
            assert ("Secure" in response.headers["Set-Cookie"]) == secure
            assert ("Strict-Transport-Security" in response.headers) == secure
        finally:
            shutdown(app)


def test_sign_in_form_next_and_sign_out(app: Flask) -> None:
    client = app.test_client(token=None)
    page = client.get("/login").get_data(as_text=True)
    assert re.search(r'<label for="username">Username</label>', page)
    assert re.search(r'<label for="password">Password</label>', page)
    assert re.search(r'<button type="submit"[^>]*>Sign in</button>', page)

    for target, landed in (("/sessions?limit=5", "/sessions?limit=5"), ("//evil.example/x", "/"),
                           ("https://evil.example/", "/"), ("/\\evil.example", "/"), ("", "/")):
        client = app.test_client(token=None)
        token = csrf_token(client)
        response = client.post("/login", query_string={"next": target},
                               data={"username": ADMIN, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302 and response.location == landed, target

    wrong = app.test_client(token=None)
    response = wrong.post("/login", data={"username": ADMIN, "password": "nope", "csrf_token": csrf_token(wrong)})
    assert response.status_code == 401 and "Wrong username or password." in response.get_data(as_text=True)
    forged = app.test_client(token=None)
    forged.get("/login")
    assert forged.post("/login", data={"username": ADMIN, "password": PASSWORD}).status_code == 400  # no CSRF token

    assert client.get("/sessions").status_code == 200
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # sign-out needs the CSRF token too
    assert client.post("/logout", data={"csrf_token": csrf_token(client)}).status_code == 302
    assert client.get("/sessions").status_code == 302
    assert_401(client.get("/api/ingest/sessions"))


def test_failed_sign_ins_are_limited_per_address_and_per_address_and_username(app_config: dict) -> None:
    """Never per username alone: ten failures for ``admin`` from elsewhere must not lock the owner
    out (issue 16, point 8)."""
    app = create_app({**app_config, "LOGIN_LIMIT": "3 per minute", "LOGIN_ADDRESS_LIMIT": "6 per minute"})
    try:
        add_user(app.extensions["ingest_db"], "bob", is_admin=False)

        def attempt(username: str, password: str, address: str):
            client = app.test_client(token=None)
            client.environ_base["REMOTE_ADDR"] = address
            form = {"username": username, "password": password, "csrf_token": csrf_token(client)}
            return client.post("/login", data=form)

        for _ in range(3):  # one address, one name: the pair is counted
            assert attempt("bob", "wrong-password", "10.0.0.1").status_code == 401
        limited = attempt("bob", PASSWORD, "10.0.0.1")  # even the right password now waits
        assert limited.status_code == 429 and "Too many failed sign-ins" in limited.get_data(as_text=True)
        assert limited.headers["Retry-After"]
        assert attempt(ADMIN, PASSWORD, "10.0.0.1").status_code == 302  # another name from that address may
        assert attempt("bob", PASSWORD, "10.0.0.2").status_code == 302  # bob from his own address may

        for n in range(6):  # one address, many names: the address is counted
            assert attempt(f"nobody{n}", "wrong-password", "10.0.2.1").status_code == 401
        assert attempt(ADMIN, PASSWORD, "10.0.2.1").status_code == 429

        for n in range(12):  # the admin's name attacked from many addresses
            assert attempt(ADMIN, "wrong-password", f"10.0.3.{n}").status_code == 401
        assert attempt(ADMIN, PASSWORD, "10.0.9.9").status_code == 302  # the owner still signs in
        assert attempt(ADMIN, PASSWORD, "10.0.9.9").status_code == 302  # successes never count
        metrics = app.test_client().get("/metrics").get_data(as_text=True)
        counted = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                   if line.startswith(("ingest_sign_in_failures_total", "ingest_sign_ins_limited_total"))}
        assert counted["ingest_sign_in_failures_total"] >= 21  # this process's, maybe other tests' too
        assert counted["ingest_sign_ins_limited_total"] >= 2
    finally:
        shutdown(app)


def test_sessions_belong_to_their_user(app: Flask, media: Path) -> None:
    engine = app.extensions["ingest_db"]
    alice = app.test_client(token=new_token(engine, "alice", is_admin=False))
    bob = app.test_client(token=new_token(engine, "bob", is_admin=False))
    admin = app.test_client()
    write_jpegs(media, 2)
    sid = start(alice, media)
    wait_for(app, sid, {"completed"})
    items = alice.get(f"/api/ingest/{sid}/items").get_json()["items"]
    thumbnail = next(i["thumbnail_url"] for i in items if i["thumbnail_url"])

    others = (f"/api/ingest/status/{sid}", f"/api/ingest/{sid}/items", f"/api/ingest/stream/{sid}", thumbnail)
    for url in others:
        with bob.get(url) as response:
            assert response.status_code == 404 and response.is_json, url
        for allowed in (alice, admin):
            with allowed.get(url) as response:  # the stream: a finished session's replay, closed here
                assert response.status_code == 200, url
    for action in ("cancel", "resume", "commit"):
        assert bob.post(f"/api/ingest/{sid}/{action}", json={}).status_code == 404, action
    assert bob.get(f"/ingest/{sid}").status_code == 404
    assert [s["session_id"] for s in bob.get("/api/ingest/sessions").get_json()["sessions"]] == []
    assert [s["session_id"] for s in alice.get("/api/ingest/sessions").get_json()["sessions"]] == [sid]
    assert sid in [s["session_id"] for s in admin.get("/api/ingest/sessions").get_json()["sessions"]]
    assert sid not in bob.get("/sessions").get_data(as_text=True)
    assert bob.get("/api/ingest/metrics").status_code == 403  # it names every user's sessions
    assert admin.get("/api/ingest/metrics").status_code == 200

    assert alice.post(f"/api/ingest/{sid}/commit", json={}).status_code == 200
    catalog = bob.get("/api/catalog").get_json()  # the catalog is shared: read by all
    assert catalog["total"] == 2
    assert bob.get(thumbnail).status_code == 200  # a catalogued item's thumbnail is visible to all
    assert bob.get(f"/api/ingest/{sid}/items").status_code == 404  # the session still is not


def test_setup_link_creates_the_first_admin_once(tmp_path: Path, media: Path) -> None:
    from ingestapp.accounts.users import setup_token

    app = create_app({"TESTING": True, "INSTANCE_PATH": tmp_path / "fresh", "MEDIA_ROOTS": [media]})
    try:
        client = app.test_client(token=None)
        login = client.get("/login").get_data(as_text=True)
        assert "No account exists yet" in login and '<label for="username">Username</label>' in login
        token = setup_token(Path(app.instance_path), app.extensions["ingest_db"])
        assert (Path(app.instance_path) / "setup-token").stat().st_mode & 0o077 == 0
        assert client.get("/setup").status_code == 404
        assert client.get("/setup?token=wrong").status_code == 404
        page = client.get(f"/setup?token={token}")
        assert page.status_code == 200 and "Create the first admin" in page.get_data(as_text=True)
        assert " style=" not in page.get_data(as_text=True) and page.headers["Content-Security-Policy"]
        form = {"token": token, "username": "root", "password": "long enough", "confirm": "different",
                "csrf_token": csrf_token(client)}
        assert client.post("/setup", data=form).status_code == 400  # the passwords differ
        form["confirm"] = "long enough"
        assert client.post("/setup", data={**form, "csrf_token": ""}).status_code == 400  # no CSRF token
        response = client.post("/setup", data=form)
        assert response.status_code == 302 and response.location == "/"
        assert client.get("/api/ingest/sessions").status_code == 200  # signed in as the new admin
        assert client.get(f"/setup?token={token}").status_code == 404  # used up
        assert not (Path(app.instance_path) / "setup-token").exists()
        again = app.test_client(token=None)
        assert again.post("/setup", data={**form, "username": "second", "csrf_token": csrf_token(again)}).status_code \
            == 404
        assert setup_token(Path(app.instance_path), app.extensions["ingest_db"]) is None
        assert sign_in(app.test_client(token=None), "root", "long enough").status_code == 302
    finally:
        shutdown(app)


def test_password_hashing_never_runs_on_the_hub(app: Flask, monkeypatch) -> None:
    """argon2 takes ~0.15 s a hash: a sign-in runs it in gevent's threadpool (another OS thread;
    argon2 releases the GIL), never on the hub thread that serves every request and stream."""
    import threading

    from ingestapp.accounts import users as accounts

    threads: list[int] = []
    verify = accounts._verify

    def recording_verify(password_hash: str, password: str) -> bool:
        threads.append(threading.get_ident())
        return verify(password_hash, password)

    monkeypatch.setattr(accounts, "_verify", recording_verify)
    for password in (PASSWORD, "wrong password"):
        client = app.test_client(token=None)
        form = {"username": ADMIN, "password": password, "csrf_token": csrf_token(client)}
        assert client.post("/login", data=form).status_code in (302, 401)
    assert len(threads) == 2 and threading.get_ident() not in threads


def test_passwords_are_hashed_with_rfc_9106_parameters_unless_told_otherwise(tmp_path: Path) -> None:
    """The default is RFC 9106's second recommendation (argon2id, 64 MiB, 3 passes, 4 lanes); the
    suite runs on argon2-cffi's test profile (tests/__init__.py), and an unknown name is refused."""
    env = {k: v for k, v in os.environ.items() if k != users.PASSWORD_PROFILE}
    code = "from ingestapp.accounts.users import PASSWORD_HASHER as h; print(h.hash('x').split('$')[3])"
    default = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert default.stdout.strip() == "m=65536,t=3,p=4", default.stderr
    assert users.PASSWORD_HASHER.hash("x").split("$")[3] == "m=8,t=1,p=1"  # CHEAPEST
    refused = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                             env={**env, users.PASSWORD_PROFILE: "FAST"})
    assert refused.returncode != 0 and "INGEST_PASSWORD_PROFILE must be one of" in refused.stderr


def test_a_sign_in_rehashes_a_password_made_with_other_parameters(app: Flask) -> None:
    """A hash keeps its parameters: one made with the default profile still verifies, and the
    sign-in stores a new hash with the current ones (here the test profile)."""
    engine = app.extensions["ingest_db"]
    with engine.begin() as conn:
        conn.execute(update(User).where(User.username == ADMIN).values(
            password_hash=users.password_hasher().hash(PASSWORD)))
    assert sign_in(app.test_client(token=None)).status_code == 302
    with engine.connect() as conn:
        stored = conn.scalar(select(User.password_hash).where(User.username == ADMIN))
    assert stored.split("$")[3] == "m=8,t=1,p=1"
    assert sign_in(app.test_client(token=None)).status_code == 302

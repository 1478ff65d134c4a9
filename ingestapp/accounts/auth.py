"""Who is asking: browser sign-in (Flask-Login session cookie), API tokens (RFC 6750 Bearer),
CSRF for cookie-authenticated changes (Flask-WTF), failed sign-in limits (Flask-Limiter), the
first-start setup page, and who may see which session.

- ``/api/...`` without valid credentials: 401 JSON ``{error, field}`` with ``WWW-Authenticate:
  Bearer`` (RFC 6750 §3). Pages redirect to ``/login?next=...``.
- A request with an ``Authorization`` header is judged by it alone (a bad token is a 401 even
  with a valid cookie). Token requests need no CSRF token: a cross-site page cannot attach one.
- Cookie requests that change state need ``X-CSRFToken`` (from ``<meta name="csrf-token">``).
- A non-admin sees only the sessions they started (others' are 404, as if they did not exist);
  admins see all. The catalog is shared.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import Engine, exists, select

from ingestapp.accounts import users as accounts
from ingestapp.accounts.signins import record_sign_out
from ingestapp.accounts.users import Account, AccountError
from ingestapp.core.errors import ApiError, JobNotFound
from ingestapp.core.metrics import SIGN_IN_FAILURES, SIGN_INS_LIMITED
from ingestapp.store import db
from ingestapp.store.models import CatalogEntry, IngestSession, Item

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def init_app(app: Flask) -> None:
    app.config.update(
        WTF_CSRF_CHECK_DEFAULT=False,  # checked in the blueprints' guards: token requests are exempt
        WTF_CSRF_TIME_LIMIT=None,  # valid as long as the sign-in session (a page may stay open for days)
        RATELIMIT_HEADERS_ENABLED=True,
        # Flask refuses a session cookie signed longer ago than this; a sign-in ends then anyway
        # (signins.py), so the two agree.
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=app.config["SIGN_IN_MAX_AGE"]),
    )
    app.before_request(_forget_identity)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_blueprint(bp)


def _forget_identity() -> None:
    """Judge every request afresh. ``g`` lives as long as the app context, which a request reuses
    when one is already pushed (tests, ``flask shell``): the last request's user must not stick."""
    for name in ("_login_user", "auth_method", "login_failed", "csrf_token", "csrf_valid"):
        g.pop(name, None)


def _engine() -> Engine:
    return current_app.extensions["ingest_db"]



@login_manager.user_loader
def _load_from_session(session_id: str) -> Account | None:
    """The cookie's user, if it still exists, its password is the one signed in with, and this
    sign-in was not signed out nor is older than ``INGEST_SIGN_IN_MAX_AGE`` (``users.browser_account``)."""
    if "Authorization" in request.headers:
        return None  # the header decides alone (see _load_from_header)
    account = accounts.browser_account(_engine(), session_id, current_app.config["SIGN_IN_MAX_AGE"])
    if account is None:
        return None
    g.auth_method = "cookie"
    return account


@login_manager.request_loader
def _load_from_header(req: object) -> Account | None:
    """``Authorization: Bearer <token>`` (RFC 6750 §2.1)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    account = accounts.user_for_token(_engine(), token.strip())
    if account is not None:
        g.auth_method = "token"
    return account


def require_api_user() -> None:
    """``before_request`` of the API: raises ApiError 401 without valid credentials (with
    ``WWW-Authenticate: Bearer``, RFC 6750 §3), 403 for a cookie-authenticated change without a
    valid CSRF token."""
    if not current_user.is_authenticated:
        sent = "Authorization" in request.headers
        message = ("the token is invalid, expired or revoked" if sent
                   else "sign in, or send Authorization: Bearer <token>")
        challenge = 'Bearer realm="ingestapp"' + (', error="invalid_token"' if sent else "")
        raise ApiError(401, message, "Authorization", {"WWW-Authenticate": challenge})
    if request.method not in SAFE_METHODS and g.get("auth_method") != "token":
        try:
            csrf.protect()
        except CSRFError as exc:
            raise ApiError(403, f"CSRF check failed: {exc.description}", "X-CSRFToken") from None


def require_page_user() -> Response | None:
    """``before_request`` of the pages: to the sign-in form (coming back here) when signed out."""
    if current_user.is_authenticated:
        return None
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site (``/x``, not ``//host`` or ``/\\host``), else ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("pages.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t"):
        return url_for("pages.index")
    return target


# -- ownership ------------------------------------------------------------------------------------


def owner_filter() -> int | None:
    """The user id a listing is limited to: None (everything) for admins, else the user's own."""
    return None if current_user.is_admin else current_user.id


def check_session_access(session_id: str) -> None:
    """Raise JobNotFound unless the session exists and the current user may see it (theirs, or
    any for an admin)."""
    with _engine().connect() as conn:
        row = conn.execute(select(IngestSession.user_id).where(IngestSession.id == session_id)).first()
    if row is None or not (current_user.is_admin or row.user_id == current_user.id):
        raise JobNotFound(session_id)


def item_visible(item_id: str) -> bool:
    """An item (its thumbnail) is visible to admins, the session's owner, and everyone once it
    is in the shared catalog."""
    if current_user.is_admin:
        return True
    with _engine().connect() as conn:
        owner = conn.scalar(
            select(IngestSession.user_id).join(Item, Item.session_id == IngestSession.id).where(Item.id == item_id)
        )
        return owner == current_user.id or bool(
            conn.scalar(select(exists().where(CatalogEntry.item_id == item_id)))
        )


# -- sign in, sign out, first start ---------------------------------------------------------------


@bp.before_request
def _check_csrf() -> None:
    if request.method not in SAFE_METHODS:
        csrf.protect()  # a CSRFError: the form is re-shown by _csrf_failed


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return render_template("message.html", title="Try again", message=f"The form expired or was not ours "
                           f"({exc.description}). Go back, reload the page and try again."), 400


def _login_address_key() -> str:
    return "address:" + (get_remote_address() or "")


def _login_pair_key() -> str:
    """(address, username): a name under attack from elsewhere still signs in from its own address."""
    return f"pair:{get_remote_address() or ''}|{request.form.get('username', '').strip().lower()}"


def _failed(response: Response) -> bool:
    return bool(g.get("login_failed"))


def _login_limit() -> str:
    return current_app.config["LOGIN_LIMIT"]


def _login_address_limit() -> str:
    return current_app.config["LOGIN_ADDRESS_LIMIT"]


@bp.app_context_processor
def _no_users_yet() -> dict[str, Any]:
    """``no_users``: the sign-in page then explains the first start (only that page asks)."""
    return {"no_users": lambda: accounts.count_users(_engine()) == 0}


@bp.errorhandler(RateLimitExceeded)
def _too_many_attempts(exc: RateLimitExceeded) -> tuple[str, int, dict[str, str]]:
    SIGN_INS_LIMITED.inc()
    log.warning("sign-in refused (%s) for %r from %s", exc.description,
                request.form.get("username", "")[:64], get_remote_address())
    error = f"Too many failed sign-ins ({exc.description}). Wait a minute, then try again."
    return render_template("login.html", error=error, next=request.args.get("next", "")), 429, {"Retry-After": "60"}


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_address_limit, key_func=_login_address_key, methods=["POST"], deduct_when=_failed)
@limiter.limit(_login_limit, key_func=_login_pair_key, methods=["POST"], deduct_when=_failed)
def login() -> Response | str | tuple[str, int]:
    """The sign-in form; on success a session cookie and a redirect to ``next`` (same site only)."""
    next_url = request.args.get("next", "")
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(safe_next(next_url))
        return render_template("login.html", error=None, next=next_url)
    username = request.form.get("username", "").strip()
    account = accounts.authenticate(_engine(), username, request.form.get("password", ""), db.off_hub)
    if account is None:
        g.login_failed = True
        SIGN_IN_FAILURES.inc()
        log.warning("failed sign-in for %r from %s", username[:64], get_remote_address())
        return render_template("login.html", error="Wrong username or password.", next=next_url), 401
    login_user(account.signed_in())
    return redirect(safe_next(next_url))


@bp.post("/logout")
def logout() -> Response:
    """Sign this browser out: its sign-in is recorded as ended first, so its cookie (and any copy
    of it) is refused and every worker ends its streams within a keepalive; ``logout_user`` then
    clears the cookie and sends Flask-Login's ``user_logged_out``, on which this worker ends that
    sign-in's streams at once (``web/stream_principals.py``). The user's other browsers stay."""
    sign_in = current_user.sign_in if current_user.is_authenticated else None
    if sign_in is not None:
        record_sign_out(_engine(), sign_in.id, current_app.config["SIGN_IN_MAX_AGE"])
    logout_user()
    return redirect(url_for("auth.login"))


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Response | str | tuple[str, int]:
    """Create the first admin, with the one-time token printed at first start."""
    instance = Path(current_app.instance_path)
    token = request.values.get("token", "")
    if accounts.count_users(_engine()) or not accounts.setup_token_matches(instance, token):
        message = "This setup link is not valid: it was used already, or an account exists. Sign in instead."
        return render_template("message.html", title="Setup link not valid", message=message), 404
    if request.method == "GET":
        return render_template("setup.html", token=token, error=None)
    password = request.form.get("password", "")
    try:
        if password != request.form.get("confirm", ""):
            raise AccountError("the passwords differ", "confirm")
        username = request.form.get("username", "").strip()
        account = accounts.create_user(_engine(), username, password, is_admin=True, offload=db.off_hub)
    except AccountError as exc:
        return render_template("setup.html", token=token, error=exc.message), 400
    accounts.finish_setup(instance)
    login_user(account.signed_in())
    return redirect(url_for("pages.index"))

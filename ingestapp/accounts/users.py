"""Accounts: users with argon2id password hashes, API tokens of which only a SHA-256 is stored,
the browser sign-in a session cookie carries (``signins.py``), the one-time first-start setup
token (the ``flask --app ingestapp users|tokens ...`` commands are ``cli/accounts.py``).

Passwords are hashed with argon2id, by default with RFC 9106's second recommended parameters
(argon2-cffi's ``RFC_9106_LOW_MEMORY``: 64 MiB, 3 passes, 4 lanes; RFC 9106 §4); see
:data:`PASSWORD_PROFILE`.
API tokens are 256-bit random strings, so a fast SHA-256 suffices to store them (no dictionary to
guess from); the token itself is printed once and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask_login import UserMixin
from sqlalchemy import Engine, delete, exists, func, select, update

from ingestapp.accounts.signins import SignIn, signed_out_ids
from ingestapp.store import db
from ingestapp.store.models import ApiToken, SignOut, User

#: The environment variable naming the argon2 parameters: one of argon2-cffi's ``argon2.profiles``.
#: ``RFC_9106_LOW_MEMORY`` is the default; ``CHEAPEST`` is the library's profile for test suites
#: (tests/__init__.py sets it: a hash there costs ~0.1 ms instead of ~0.2 s of CPU), never for real
#: passwords. A hash keeps its parameters, so it verifies under any profile; a sign-in rehashes it
#: with the current one (``authenticate``).
PASSWORD_PROFILE = "INGEST_PASSWORD_PROFILE"
PASSWORD_PROFILES = ("RFC_9106_LOW_MEMORY", "RFC_9106_HIGH_MEMORY", "CHEAPEST")
DEFAULT_PASSWORD_PROFILE = PASSWORD_PROFILES[0]


def password_hasher(profile: str = DEFAULT_PASSWORD_PROFILE) -> PasswordHasher:
    """The argon2 hasher of the named profile (``PASSWORD_PROFILES``); raises ValueError otherwise."""
    if profile not in PASSWORD_PROFILES:
        raise ValueError(f"{PASSWORD_PROFILE} must be one of {', '.join(PASSWORD_PROFILES)}, not {profile!r}")
    return PasswordHasher.from_parameters(getattr(profiles, profile))


PASSWORD_HASHER = password_hasher(os.environ.get(PASSWORD_PROFILE) or DEFAULT_PASSWORD_PROFILE)
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_PASSWORD_LENGTH = 8  # NIST SP 800-63B §5.1.1.2
TOKEN_PREFIX = "ingest_"
#: Seconds between writes of a token's ``last_used_at`` (every request would be a write).
LAST_USED_RESOLUTION = 60.0
SETUP_TOKEN_FILE = "setup-token"
#: Runs a CPU-heavy call (an argon2 hash takes ~0.15 s): the web app passes its threadpool, so the
#: gevent hub never waits on it; the CLI calls directly.
Offload = Callable[..., Any]


def _call(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


class AccountError(Exception):
    """A refused account operation: ``message`` says why, ``field`` which input (as in API errors)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


@dataclass(frozen=True)
class Principal:
    """A credential: an API token (``token_id``) or a signed-in browser (the user's password
    fingerprint, which a new password changes, and the ``sign_in``, which signing out ends)."""

    user_id: int
    token_id: int | None
    fingerprint: str
    sign_in: SignIn | None = None


@dataclass(frozen=True)
class Account(UserMixin):
    """The signed-in user as Flask-Login sees it (detached from the database).

    ``get_id()`` (what the session cookie holds) is ``"<id>:<password fingerprint>:<sign-in id>:
    <sign-in time>"``, so a new password signs out every browser signed in with the old one
    (Flask-Login's alternative id), and signing out stops this one sign-in (``signins.py``).
    """

    id: int
    username: str
    is_admin: bool
    password_fingerprint: str = ""
    token_id: int | None = None  # the API token this request came with, if any
    sign_in: SignIn | None = None  # the browser sign-in this request came with, if any

    def principal(self) -> Principal:
        """The credential this account was authenticated with (what revocation looks at)."""
        return Principal(self.id, self.token_id, self.password_fingerprint, self.sign_in)

    @classmethod
    def of(cls, row: Any) -> Account:
        """From a row with the ``users`` columns."""
        return cls(row.id, row.username, bool(row.is_admin), password_fingerprint(row.password_hash))

    def signed_in(self) -> Account:
        """This account as a new browser sign-in (what ``login_user`` puts in the cookie)."""
        return replace(self, token_id=None, sign_in=SignIn.new())

    def get_id(self) -> str:
        sign_in = self.sign_in or SignIn("", 0)  # no sign-in: an id the user loader refuses
        return f"{self.id}:{self.password_fingerprint}:{sign_in.id}:{sign_in.at}"


def password_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


# -- users ----------------------------------------------------------------------------------------


def check_username(username: str) -> str:
    """``username`` if it is 1-64 of ``A-Z a-z 0-9 . _ -`` (starting alphanumeric); else AccountError."""
    if not USERNAME_RE.fullmatch(username):
        raise AccountError("a username is 1 to 64 letters, digits, '.', '_' or '-'", "username")
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters", "password")
    return password


def create_user(
    engine: Engine, username: str, password: str, is_admin: bool = False, offload: Offload = _call
) -> Account:
    """Add a user. Raises AccountError for a bad or taken name or a short password."""
    check_username(username)
    password_hash = offload(PASSWORD_HASHER.hash, check_password(password))
    with db.begin(engine) as conn:
        if conn.scalar(select(User.id).where(User.username == username)) is not None:
            raise AccountError(f"user {username!r} already exists", "username")
        user_id = conn.execute(
            User.__table__.insert().values(
                username=username, password_hash=password_hash, is_admin=is_admin, created_at=time.time()
            )
        ).inserted_primary_key[0]
    return Account(user_id, username, is_admin, password_fingerprint(password_hash))


def browser_account(engine: Engine, cookie_id: str, max_age: float) -> Account | None:
    """The account of a session cookie's ``get_id()``, or None when the user is gone, the password
    changed, the sign-in was signed out or began more than ``max_age`` seconds ago, or the id is
    not one this release writes (a cookie of an earlier release). One query."""
    parts = cookie_id.split(":")
    if len(parts) != 4:  # an earlier release's "<id>:<fingerprint>": no sign-in to sign out
        return None
    user_id, fingerprint, sign_in_id, signed_in_at = parts
    sign_in = SignIn.parse(sign_in_id, signed_in_at)
    if not user_id.isdigit() or sign_in is None or sign_in.expired(max_age):
        return None
    signed_out = exists().where(SignOut.sign_in_id == sign_in.id).label("signed_out")
    with engine.connect() as conn:
        row = conn.execute(select(User, signed_out).where(User.id == int(user_id))).first()
    if row is None or row.signed_out or password_fingerprint(row.password_hash) != fingerprint:
        return None
    return replace(Account.of(row), sign_in=sign_in)


def find_user(engine: Engine, username: str | None = None, user_id: int | None = None) -> Account | None:
    """The user by name or id, or None."""
    condition = User.username == username if username is not None else User.id == user_id
    query = select(User).where(condition)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return Account.of(row) if row else None


def list_users(engine: Engine) -> list[dict]:
    """Every user: ``{id, username, is_admin, created_at, tokens}`` (active token count)."""
    now = time.time()
    active = (
        select(func.count())
        .where(ApiToken.user_id == User.id, ApiToken.revoked_at.is_(None))
        .where((ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now))
        .scalar_subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(User.id, User.username, User.is_admin, User.created_at, active.label("tokens")).order_by(User.id)
        ).all()
    return [dict(row._mapping) for row in rows]


def count_users(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(User)) or 0


def _verify(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; None (no such user) is checked against a hash
    of a random password, so a wrong name costs as long as a wrong password."""
    try:
        return PASSWORD_HASHER.verify(password_hash or _unknown_user_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _unknown_user_hash() -> str:
    # Made at the first unknown name, not at import: a hash is ~0.15 s of CPU, and every process
    # importing the package (each gunicorn worker, each CLI command) paid it.
    return PASSWORD_HASHER.hash(secrets.token_hex(16))


def authenticate(engine: Engine, username: str, password: str, offload: Offload = _call) -> Account | None:
    """The user if ``password`` is theirs, else None (taking as long either way)."""
    with engine.connect() as conn:
        row = conn.execute(select(User).where(User.username == username)).first()
    if not offload(_verify, row.password_hash if row else None, password) or row is None:
        return None
    if PASSWORD_HASHER.check_needs_rehash(row.password_hash):  # made with other parameters
        set_password(engine, username, password, offload)
        return find_user(engine, username=username)
    return Account.of(row)


def set_password(engine: Engine, username: str, password: str, offload: Offload = _call) -> None:
    """Replace a user's password. Raises AccountError for an unknown user or a short password."""
    password_hash = offload(PASSWORD_HASHER.hash, check_password(password))
    with db.begin(engine) as conn:
        if not conn.execute(update(User).where(User.username == username).values(password_hash=password_hash)).rowcount:
            raise AccountError(f"no user {username!r}", "username")


def delete_user(engine: Engine, username: str) -> None:
    """Remove a user and their tokens; their sessions stay (visible to admins only)."""
    with db.begin(engine) as conn:
        user_id = conn.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            raise AccountError(f"no user {username!r}", "username")
        conn.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
        conn.execute(delete(User).where(User.id == user_id))


def default_cli_user(engine: Engine, username: str | None) -> Account:
    """The user the CLI acts as: ``username``, else the only admin. Raises AccountError."""
    if username is not None:
        account = find_user(engine, username=username)
        if account is None:
            raise AccountError(f"no user {username!r}", "user")
        return account
    with engine.connect() as conn:
        admins = conn.execute(select(User).where(User.is_admin.is_(True)).limit(2)).all()
    if not admins:
        raise AccountError("no admin user exists: create one with 'flask --app ingestapp users create NAME --admin'")
    if len(admins) > 1:
        raise AccountError("there are several admins: say which user acts with --user NAME", "user")
    return Account.of(admins[0])


# -- API tokens -----------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, username: str, name: str = "", expires_days: float | None = None) -> tuple[int, str]:
    """A new API token for ``username``: ``(token id, token)``. Only its hash is stored."""
    account = find_user(engine, username=username)
    if account is None:
        raise AccountError(f"no user {username!r}", "username")
    if expires_days is not None and expires_days <= 0:
        raise AccountError("--expires-days must be positive", "expires_days")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    with db.begin(engine) as conn:
        token_id = conn.execute(
            ApiToken.__table__.insert().values(
                user_id=account.id,
                token_hash=token_hash(token),
                name=name[:100],
                created_at=now,
                expires_at=now + expires_days * 86400 if expires_days is not None else None,
            )
        ).inserted_primary_key[0]
    return token_id, token


def user_for_token(engine: Engine, token: str) -> Account | None:
    """The owner of a valid (known, not revoked, not expired) token, else None; notes its use."""
    now = time.time()
    with engine.connect() as conn:
        row = conn.execute(
            select(
                ApiToken.id, ApiToken.expires_at, ApiToken.revoked_at, ApiToken.last_used_at,
                User.id.label("user_id"), User.username, User.is_admin, User.password_hash,
            )
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == token_hash(token))
        ).first()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        with db.begin(engine) as conn:
            conn.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return Account(row.user_id, row.username, bool(row.is_admin), password_fingerprint(row.password_hash), row.id)


def valid_principals(engine: Engine, principals: set[Principal], sign_in_max_age: float) -> set[Principal]:
    """Those of ``principals`` still valid: a token known, not revoked, not expired, of an existing
    user; a browser's user existing with the password it signed in with, its sign-in neither
    signed out nor older than ``sign_in_max_age`` seconds. Three queries at most."""
    now = time.time()
    token_ids = {p.token_id for p in principals if p.token_id is not None}
    user_ids = {p.user_id for p in principals}
    with engine.connect() as conn:
        tokens = set(conn.scalars(select(ApiToken.id).where(
            ApiToken.id.in_(token_ids), ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now),
        ))) if token_ids else set()
        fingerprints = {row.id: password_fingerprint(row.password_hash) for row in conn.execute(
            select(User.id, User.password_hash).where(User.id.in_(user_ids)))}
        signed_out = signed_out_ids(conn, {p.sign_in.id for p in principals if p.sign_in is not None})

    def browser_valid(p: Principal) -> bool:
        return (fingerprints[p.user_id] == p.fingerprint and p.sign_in is not None
                and p.sign_in.id not in signed_out and not p.sign_in.expired(sign_in_max_age, now))

    return {p for p in principals if p.user_id in fingerprints and (
        p.token_id in tokens if p.token_id is not None else browser_valid(p))}


def list_tokens(engine: Engine) -> list[dict]:
    """Every token: ``{id, username, name, created_at, expires_at, revoked_at, last_used_at}``."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                ApiToken.id, User.username, ApiToken.name, ApiToken.created_at, ApiToken.expires_at,
                ApiToken.revoked_at, ApiToken.last_used_at,
            ).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
        ).all()
    return [dict(row._mapping) for row in rows]


def revoke_token(engine: Engine, token_id: int) -> None:
    """Revoke a token now (kept, for the record). Raises AccountError for an unknown id."""
    with db.begin(engine) as conn:
        active = (ApiToken.id == token_id) & ApiToken.revoked_at.is_(None)
        result = conn.execute(update(ApiToken).where(active).values(revoked_at=time.time()))
        if not result.rowcount and conn.scalar(select(ApiToken.id).where(ApiToken.id == token_id)) is None:
            raise AccountError(f"no token {token_id}", "id")


# -- first start ----------------------------------------------------------------------------------


def setup_token(instance: Path, engine: Engine) -> str | None:
    """The one-time token of ``/setup?token=...`` while no user exists (created on first call,
    kept in ``instance/setup-token`` with mode 0600 until the first admin is made); else None."""
    path = instance / SETUP_TOKEN_FILE
    if count_users(engine):
        path.unlink(missing_ok=True)
        return None
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    return token


def setup_token_matches(instance: Path, token: str) -> bool:
    """Whether ``token`` is the current setup token (constant-time compare)."""
    path = instance / SETUP_TOKEN_FILE
    if not token or not path.exists():
        return False
    return hmac.compare_digest(path.read_text().strip().encode(), token.encode())


def finish_setup(instance: Path) -> None:
    (instance / SETUP_TOKEN_FILE).unlink(missing_ok=True)

"""Browser sign-ins: each has a random id and a time, carried in its session cookie, so one
browser can be signed out on the server (issue 16, point 10; docs/security.md, "The session cookie").

Flask's session cookie is signed, not stored: before sign-ins had an id, ``POST /logout`` only
cleared the cookie in the browser that sent it, and a copy of it went on working (and its open
streams went on). Now ``POST /logout`` records the sign-in's id in ``sign_outs``; the user loader
refuses a cookie of a signed-out sign-in, and every worker's stream check ends its streams
(``users.valid_principals``).

A sign-in lasts at most ``INGEST_SIGN_IN_MAX_AGE`` seconds from its time, whatever the cookie
says; so a ``sign_outs`` row older than that can go: every cookie it stops is refused by age too.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from ingestapp.store import db
from ingestapp.store.models import SignOut

#: Random bytes of a sign-in id (128 bits: unguessable; 22 URL-safe characters, no ":").
SIGN_IN_ID_BYTES = 16


@dataclass(frozen=True)
class SignIn:
    """One browser sign-in: ``id`` (random, URL-safe base64) and ``at`` (Unix time, whole seconds)."""

    id: str
    at: int

    @classmethod
    def new(cls) -> SignIn:
        return cls(secrets.token_urlsafe(SIGN_IN_ID_BYTES), int(time.time()))

    @classmethod
    def parse(cls, id_part: str, at_part: str) -> SignIn | None:
        """From the cookie's two fields; None when they are not a sign-in's."""
        if not id_part or not at_part.isdigit():
            return None
        return cls(id_part, int(at_part))

    def expired(self, max_age: float, now: float | None = None) -> bool:
        """Whether it began more than ``max_age`` seconds ago (or in the future: a forged time)."""
        now = time.time() if now is None else now
        return not now - max_age < self.at <= now + 1  # a second of leeway for clocks between hosts


def record_sign_out(engine: Engine, sign_in_id: str, max_age: float) -> None:
    """Record ``sign_in_id`` as signed out (again is harmless), and prune the rows older than
    ``max_age`` seconds (``INGEST_SIGN_IN_MAX_AGE``): their cookies have expired anyway."""
    now = time.time()
    with db.begin(engine) as conn:
        conn.execute(delete(SignOut).where(SignOut.signed_out_at < now - max_age))
    try:
        with db.begin(engine) as conn:
            conn.execute(insert(SignOut).values(sign_in_id=sign_in_id, signed_out_at=now))
    except IntegrityError:
        pass  # signed out already (a second click, a second tab): the row that stops it is there


def signed_out_ids(conn: Connection, sign_in_ids: set[str]) -> set[str]:
    """Those of ``sign_in_ids`` that were signed out (one query; none for an empty set)."""
    if not sign_in_ids:
        return set()
    return set(conn.scalars(select(SignOut.sign_in_id).where(SignOut.sign_in_id.in_(sign_in_ids))))

"""Who holds the open SSE streams of this worker: a fair share per user, and revocation that ends
them (issue "No one can stall the server", points 7 and 10; docs/security.md, "Limits").

- **Streams per user.** A user may hold at most ``INGEST_MAX_STREAMS_PER_USER`` open streams in
  this worker; the next one is a 429 ``{error, field}`` (the page's connection retries it like any
  failed stream, after its backoff).
- **Revocation within a keepalive.** A stream was authorised when it opened; its credential is
  checked again every ``INGEST_SSE_KEEPALIVE`` seconds, for all the worker's streams in one pass
  (three queries at most, whatever the number of streams): a revoked or expired token, a deleted
  user, a changed password (the cookie's fingerprint) or a signed-out or expired browser sign-in
  (``accounts/signins.py``) ends the streams that used it, in every worker.
- **Signing out at once.** ``POST /logout`` records the sign-out, then Flask-Login sends
  ``user_logged_out``: the worker that handled it ends that sign-in's streams at once
  (``end_signed_out_streams``); the other workers' checks do within a keepalive. The user's other
  browsers keep theirs.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable

import gevent
from flask import Flask

from ingestapp.accounts.users import Account, Principal
from ingestapp.core.errors import ApiError
from ingestapp.events.broker import Subscription

log = logging.getLogger(__name__)


class StreamPrincipals:
    """This worker's open streams by the credential that opened them.

    Args:
        max_per_user: open streams a user may hold at once.
        interval: seconds between two checks of the credentials (the SSE keepalive).
        still_valid: which of the given principals are still valid (``accounts.users.valid_principals``
            bound to the engine); called once per check.
    """

    def __init__(self, max_per_user: int, interval: float,
                 still_valid: Callable[[set[Principal]], set[Principal]]) -> None:
        self.max_per_user = max_per_user
        self.interval = interval
        self.still_valid = still_valid
        self.streams: dict[Principal, set[Subscription]] = defaultdict(set)
        self.per_user: Counter[int] = Counter()
        self._checker: gevent.Greenlet | None = None

    def admit(self, principal: Principal, subscription: Subscription) -> None:
        """Count a new stream; raises ApiError 429 when its user holds ``max_per_user`` already."""
        if self.per_user[principal.user_id] >= self.max_per_user:
            raise ApiError(429, f"too many open streams for this user (INGEST_MAX_STREAMS_PER_USER="
                                f"{self.max_per_user}); close some", None, {"Retry-After": "5"})
        self.streams[principal].add(subscription)
        self.per_user[principal.user_id] += 1
        if self._checker is None:
            self._checker = gevent.spawn(self._check_forever)

    def release(self, principal: Principal, subscription: Subscription) -> None:
        """Forget a stream; safe to call more than once."""
        held = self.streams.get(principal)
        if held is None or subscription not in held:
            return
        held.discard(subscription)
        if not held:
            del self.streams[principal]
        self.per_user[principal.user_id] -= 1
        if self.per_user[principal.user_id] <= 0:
            del self.per_user[principal.user_id]

    def check(self) -> int:
        """End the streams whose credential is no longer valid; returns how many were ended."""
        if not self.streams:
            return 0
        valid = self.still_valid(set(self.streams))
        invalid = [principal for principal in self.streams if principal not in valid]
        return sum(self.end(principal, "credential revoked") for principal in invalid)

    def end(self, principal: Principal, reason: str) -> int:
        """End the open streams of ``principal`` now (``reason``: for the log); returns how many."""
        held = list(self.streams.get(principal, ()))
        for subscription in held:
            subscription.close()  # the stream ends at once; its response's close releases it
        if held:
            log.info("ended %d stream(s) of user %s: %s", len(held), principal.user_id, reason)
        return len(held)

    def stop(self) -> None:
        if self._checker is not None:
            self._checker.kill(block=False)
            self._checker = None

    def _check_forever(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.check()
            except Exception:  # a database hiccup must not end the checking
                log.exception("checking the credentials of open streams failed; retrying")


def end_signed_out_streams(app: Flask, user: object, **_: object) -> None:
    """Flask-Login's ``user_logged_out`` receiver: end the signed-out browser's streams in this
    worker at once (``POST /logout`` recorded the sign-out first, for the other workers). ``user``
    is whoever sent ``POST /logout``: a browser's Account, a token's, or the anonymous user."""
    if isinstance(user, Account) and user.sign_in is not None:
        app.extensions["ingest_stream_principals"].end(user.principal(), "signed out")

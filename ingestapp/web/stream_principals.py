"""Who holds the open SSE streams of this worker: a fair share per user, and revocation that ends
them (issue "No one can stall the server", points 7 and 10; docs/security.md, "Limits").

- **Streams per user.** A user may hold at most ``INGEST_MAX_STREAMS_PER_USER`` open streams in
  this worker; the next one is a 429 ``{error, field}`` (the page's connection retries it like any
  failed stream, after its backoff).
- **Revocation within a keepalive.** A stream was authorised when it opened; its credential is
  checked again every ``INGEST_SSE_KEEPALIVE`` seconds, for all the worker's streams in one pass
  (two queries, whatever the number of streams): a revoked or expired token, a deleted user or a
  changed password (the cookie's fingerprint) ends the streams that used it.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable

import gevent

from ingestapp.accounts.users import Principal
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
        ended = 0
        for principal in [p for p in self.streams if p not in valid]:
            for subscription in list(self.streams[principal]):
                subscription.close()  # the stream ends at once; its response's close releases it
                ended += 1
            log.info("ended %d stream(s) of user %s: credential revoked", len(self.streams[principal]),
                     principal.user_id)
        return ended

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

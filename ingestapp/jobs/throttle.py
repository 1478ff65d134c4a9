"""Event throttling: a running job's ``progress`` events go out at most every PROGRESS_INTERVAL."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent

#: Seconds between ``progress`` events: 20 per second at most, however fast files go by (a
#: ``file`` event still goes out for every file). Each progress event costs every watching stream
#: a send; browsers repaint at most once a frame anyway.
PROGRESS_INTERVAL = 0.05


class ProgressThrottle:
    """Calls ``emit`` now, or once PROGRESS_INTERVAL has passed since its last call (from a timer
    greenlet, and only while ``running()`` still holds). Hub thread only."""

    def __init__(self, emit: Callable[[], None], running: Callable[[], bool]) -> None:
        self.emit = emit
        self.running = running
        self._last = 0.0  # time.monotonic() of the last call
        self._timer: gevent.Greenlet | None = None

    def request(self) -> None:
        """Emit now, or schedule one deferred emit if the last one was under PROGRESS_INTERVAL ago."""
        wait = self._last + PROGRESS_INTERVAL - time.monotonic()
        if wait > 0:
            if self._timer is None:
                self._timer = gevent.spawn_later(wait, self._deferred)
            return
        self._last = time.monotonic()
        self.emit()

    def cancel(self) -> None:
        """Drop a deferred emit (the job's terminal event carries the final progress)."""
        if self._timer is not None:
            self._timer.kill(block=False)

    def _deferred(self) -> None:
        self._timer = None
        if self.running():
            self.request()

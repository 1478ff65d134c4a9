"""Fair shares of a pool's stage processes: idle processes go round robin to the sessions with a
file waiting, not first come, first served.

A job runs as many files at once as the pool has processes, so a pool that hands out its idle
processes first come, first served lets one big job hold nearly all of them: the greenlet that just
gave a process back asks again at once and gets it, while a small job started later waits behind the
big one's thousands of files. Here each file asks under its session's key, and an idle process goes
to the next session in turn among those with a file waiting (the order in which they asked; a
session served goes to the back). With N sessions waiting, each gets about 1/N of the processes, so
a 4-file ingest is done within a few file times however big the jobs running beside it.

Everything happens on the gevent hub: no locks. A file waits with ``AsyncResult.get(timeout=...)``
and asks ``abandon()`` every ``poll`` seconds, so a cancelled job stops waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult

T = TypeVar("T")


class FairShare(Generic[T]):
    """The idle processes (any ``T``) of one pool and the files waiting for one, by session key."""

    def __init__(self, poll: float) -> None:
        self.poll = poll  # seconds between a waiting file's ``abandon()`` questions
        self._idle: list[T] = []
        #: Each session's waiting files, oldest first; the dict's order is the turn order.
        self._waiting: dict[str, deque[AsyncResult]] = {}

    def put(self, process: T) -> None:
        """An idle process: to the next session in turn with a file waiting, else kept."""
        self._idle.append(process)
        self._hand_out()

    def take(self, key: str, abandon: Callable[[], bool]) -> T | None:
        """An idle process for a file of session ``key``, in the session's turn; None once
        ``abandon()`` is true. Call from a greenlet: it waits without blocking the hub."""
        waiter: AsyncResult = AsyncResult()
        self._waiting.setdefault(key, deque()).append(waiter)
        self._hand_out()
        try:
            while True:
                try:
                    return waiter.get(timeout=self.poll)
                except gevent.Timeout:
                    if abandon():
                        break
        except BaseException:  # killed while waiting (the job was stopped)
            self._withdraw(key, waiter)
            raise
        self._withdraw(key, waiter)
        return None

    def drop_idle(self) -> None:
        """Forget the idle processes (the pool killed them)."""
        self._idle.clear()

    def _hand_out(self) -> None:
        while self._idle and self._waiting:
            key = next(iter(self._waiting))
            files = self._waiting.pop(key)
            files.popleft().set(self._idle.pop())
            if files:
                self._waiting[key] = files  # at the back: every other session waiting goes first

    def _withdraw(self, key: str, waiter: AsyncResult) -> None:
        """A file stops waiting: a process handed to it meanwhile goes to the next in turn."""
        if waiter.ready():
            self.put(waiter.get())
            return
        files = self._waiting[key]
        files.remove(waiter)
        if not files:
            del self._waiting[key]

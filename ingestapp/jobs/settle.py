"""Whole files only: which changed files of a watched directory have stopped changing.

A file is *settled* once two ``stat`` results taken at least ``settle`` seconds apart agree on its
size, mtime and inode, with no change heard in between (an inotify event starts the window
again). A file written under a temporary name and renamed is heard under its final name; the
temporary name vanishes and is dropped at its next check. Only files in their settle window are
held here (one small record each), so memory does not grow with the watched tree.

Pure bookkeeping: the caller does the ``stat`` calls (in a threadpool) and passes the times.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileStat:
    """What ``stat`` says of a file: ``size`` (bytes), ``mtime_ns`` (ns) and its identity."""

    size: int
    mtime_ns: int
    dev: int
    ino: int

    @classmethod
    def of(cls, path: str) -> FileStat | None:
        """The stat of ``path`` (symlinks followed); None when it is gone or not a regular file.
        Blocking I/O: call it through the threadpool."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return cls(info.st_size, info.st_mtime_ns, info.st_dev, info.st_ino)


@dataclass(frozen=True, slots=True)
class _Pending:
    stat: FileStat | None  # as last observed; None: changed since, to be observed again at once
    observed: float  # time.monotonic() of that observation (or of the change heard)


class Settler:
    """Files seen changing, by their path relative to the watched directory, until they settle."""

    def __init__(self, settle: float) -> None:
        self.settle = settle  # seconds
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def changed(self, relpath: str, now: float) -> None:
        """A change was heard (inotify): observe the file again at once, and wait from now."""
        self._pending[relpath] = _Pending(None, now)

    def seen(self, relpath: str, stat: FileStat, now: float) -> None:
        """A scan found the file new or different from what was ingested: wait from this stat on
        (a file already waiting keeps its own window)."""
        self._pending.setdefault(relpath, _Pending(stat, now))

    def due(self, now: float) -> list[str]:
        """The files to ``stat`` now: those never observed since a change, and those whose window
        has passed."""
        return [
            relpath for relpath, pending in self._pending.items()
            if pending.stat is None or now - pending.observed >= self.settle
        ]

    def checked(self, relpath: str, stat: FileStat | None, now: float) -> bool:
        """Record a ``stat`` of a due file taken at ``now``; True when the file is settled (it is
        then forgotten: the caller takes it). A file that is gone is forgotten; one that changed
        waits a new window from ``now``."""
        pending = self._pending.get(relpath)
        if pending is None:
            return False
        if stat is None:
            del self._pending[relpath]
            return False
        if pending.stat == stat and now - pending.observed >= self.settle:
            del self._pending[relpath]
            return True
        if pending.stat != stat:
            self._pending[relpath] = _Pending(stat, now)
        return False

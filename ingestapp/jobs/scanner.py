"""The scanning stage: a streaming, sorted walk of a directory, filtered by glob patterns.

Symbolic links (README, "What happens when..."): a link to a file inside the media roots is
ingested under the link's name; a link to a directory inside the media roots is followed, once
per directory (tracked by ``(st_dev, st_ino)``), unless its target lies inside the scanned
directory (those files are ingested under their own path). A link loop (to an ancestor, to
itself, a cycle of links), a dangling link and a link leading outside the media roots are not
followed; each is reported once, as an error entry of the ``scanning`` stage.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ingestapp.core.paths import inside
from ingestapp.core.patterns import compile_patterns

#: ``(st_dev, st_ino)``: what a file or directory is, whatever path leads to it.
Identity = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """One entry of a directory listing.

    Attributes:
        name: the entry's name (``os.fsdecode`` form: exact bytes, see ``paths``).
        real: where its data is, symlinks resolved at listing time (None for a broken link); a
            ``str``, as joining strings is several times faster than ``Path`` for huge trees.
        identity: ``(st_dev, st_ino)`` of ``real``.
        is_dir: a directory (or a link to one); None when unknown (broken link).
        is_link: the entry is a symbolic link.
        problem: why a link is not followed (loop, dangling, outside the roots), else None.
    """

    name: str
    real: str | None
    identity: Identity | None
    is_dir: bool | None
    is_link: bool = False
    problem: str | None = None


@dataclass(frozen=True)
class Listing:
    """A directory's own identity and its entries sorted by name."""

    identity: Identity
    entries: list[Entry]


@dataclass(frozen=True)
class ScannedFile:
    """A file the scan found.

    Attributes:
        relpath: path relative to the scanned directory, POSIX separators, ``os.fsdecode`` form.
        real: the file's real path at scan time (symlinks resolved): what the stages open.
        identity: its ``(st_dev, st_ino)`` at scan time; the stages refuse any other file.
    """

    relpath: str
    real: str
    identity: Identity


def list_directory(directory: str | Path, media_roots: list[Path]) -> Listing:
    """List ``directory`` (a real path): regular files, directories and symlinks resolved.

    Hidden entries (a leading ``.``) and special files (FIFOs, sockets, devices) are left out.
    Blocking I/O (lstat, stat, realpath): call it through the threadpool.

    Raises:
        OSError: the directory cannot be listed.
    """
    identity = _identity(os.stat(directory))
    entries = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                entries.append(_link_entry(entry, media_roots))
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the directory was read: nothing is missing
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                real = os.path.join(directory, entry.name)
                entries.append(Entry(entry.name, real, _identity(info), stat.S_ISDIR(info.st_mode)))
    entries.sort(key=lambda e: e.name)
    return Listing(identity, entries)


def _link_entry(entry: os.DirEntry, media_roots: list[Path]) -> Entry:
    try:
        info = os.stat(entry.path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problem = "symbolic link loop: not followed"
        elif exc.errno == errno.ENOENT:
            problem = "dangling symbolic link: its target does not exist"
        else:
            problem = f"symbolic link not followed: {exc.strerror or type(exc).__name__}"
        return Entry(entry.name, None, None, None, True, problem)
    is_dir = stat.S_ISDIR(info.st_mode)
    if not (is_dir or stat.S_ISREG(info.st_mode)):
        return Entry(entry.name, None, None, False, True, "symbolic link to a special file: not followed")
    real = os.path.realpath(entry.path)
    if not inside(Path(real), media_roots):
        return Entry(entry.name, None, None, is_dir, True, "symbolic link leads outside the media roots: not followed")
    return Entry(entry.name, real, _identity(info), is_dir, True)


def _identity(info: os.stat_result) -> Identity:
    return info.st_dev, info.st_ino


def scan(
    directory: Path,
    patterns: list[str],
    listdir: Callable[[str | Path], Listing],
    on_error: Callable[[str, str], None] = lambda relpath, message: None,
) -> Iterator[ScannedFile]:
    """Yield every matching file under the real path ``directory``, depth first, in sorted path
    order, as the walk discovers them (nothing waits for the whole tree).

    ``listdir`` lists one directory (``list_directory`` run in the threadpool: the walk itself
    does no I/O). Problems are reported to ``on_error(relative path, message)`` and the walk goes
    on: an unlistable subdirectory and each link that is not followed (see the module docstring;
    a broken link or a link to a directory always, a link to a file when its name matches the
    patterns).

    Raises:
        OSError: ``directory`` itself cannot be listed (the first ``next()`` raises it).
    """
    matches = compile_patterns(patterns)
    top = listdir(directory)
    visited = {top.identity}
    stack: list[tuple[str, Identity, Iterator[Entry]]] = [("", top.identity, iter(top.entries))]
    while stack:
        prefix, _, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        relpath = prefix + entry.name
        if entry.problem is not None:
            if entry.is_dir is not False or matches(relpath):
                on_error(relpath, entry.problem)
        elif entry.is_dir:
            ancestors = {identity for _, identity, _ in stack}
            if entry.identity in ancestors or directory.is_relative_to(entry.real):
                on_error(relpath, "symbolic link loop: it points to a directory that contains it; not followed")
            elif entry.identity in visited or (entry.is_link and Path(entry.real).is_relative_to(directory)):
                continue  # scanned under another path already, or will be under its own
            else:
                visited.add(entry.identity)
                try:
                    listing = listdir(entry.real)
                except OSError as exc:
                    on_error(relpath, f"cannot list the directory: {exc.strerror or type(exc).__name__}")
                    continue
                stack.append((relpath + "/", entry.identity, iter(listing.entries)))
        elif matches(relpath):
            yield ScannedFile(relpath, entry.real, entry.identity)

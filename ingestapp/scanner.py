"""The scanning stage: a streaming, sorted walk of a directory, filtered by glob patterns."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from wcmatch import glob

from .paths import OutsideMediaRoots, confine

#: ``**`` crosses directories; extensions match in any case (``IMG_1.JPG``); ``a,b`` alternatives
#: are split by the caller, so no brace expansion.
_GLOB_FLAGS = glob.GLOBSTAR | glob.IGNORECASE | glob.DOTGLOB

Listing = list[tuple[str, bool]]


def list_directory(directory: Path, media_roots: list[Path]) -> Listing:
    """``(name, is_directory)`` for the entries of ``directory``, sorted by name.

    Hidden entries (a leading ``.``), symlinked directories (which could loop) and symlinked
    files whose target is outside ``media_roots`` are left out. Blocking I/O (stat, readlink):
    call it through the threadpool. Raises OSError when the directory is unreadable.
    """
    entries = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir or (entry.is_file() and _inside(entry, media_roots)):
                entries.append((entry.name, is_dir))
    entries.sort()
    return entries


def check_patterns(patterns: list[str]) -> None:
    """Compile the glob alternatives as ``matches`` will; raise ValueError when wcmatch refuses
    them (more alternatives than its pattern limit, 1000)."""
    try:
        glob.translate(patterns, flags=_GLOB_FLAGS)
    except Exception as exc:  # wcmatch's PatternLimitException is not public API
        raise ValueError(str(exc)) from None


def matches(relpath: str, patterns: list[str]) -> bool:
    """Whether a POSIX relative path matches any glob alternative (``**`` spans directories)."""
    return glob.globmatch(relpath, patterns, flags=_GLOB_FLAGS)


def scan(
    directory: Path,
    patterns: list[str],
    listdir: Callable[[Path], Listing],
    on_error: Callable[[str, OSError], None] = lambda relpath, exc: None,
) -> Iterator[tuple[Path, str]]:
    """Yield ``(absolute path, path relative to directory)`` of every matching file, depth first,
    in sorted path order, as the walk discovers them (nothing waits for the whole tree).

    ``listdir`` lists one directory (``list_directory`` run in the threadpool: the walk itself
    does no I/O). An unreadable subdirectory is reported to
    ``on_error(relative path, OSError)`` and the walk goes on; an unreadable ``directory`` raises.
    """
    stack: list[tuple[Path, str, Iterator[tuple[str, bool]]]] = [(directory, "", iter(listdir(directory)))]
    while stack:
        path, prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        name, is_dir = entry
        child, relpath = path / name, prefix + name
        if is_dir:
            try:
                stack.append((child, relpath + "/", iter(listdir(child))))
            except OSError as exc:
                on_error(relpath, exc)
        elif matches(relpath, patterns):
            yield child, relpath


def _inside(entry: os.DirEntry, media_roots: list[Path]) -> bool:
    """Whether a file entry, once its symlinks are resolved, is inside a media root."""
    if not entry.is_symlink():
        return True
    try:
        confine(Path(entry.path), media_roots)
    except OutsideMediaRoots:
        return False
    return True

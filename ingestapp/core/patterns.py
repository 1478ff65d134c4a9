"""Glob patterns: a session's ``pattern`` alternatives, compiled once and matched per path.

``**`` crosses directories, extensions match in any case (``IMG_1.JPG``), dot files match too,
and ``a,b`` alternatives are split by the caller (no brace expansion): wcmatch's ``glob`` syntax
with ``GLOBSTAR | IGNORECASE | DOTGLOB``.
"""

from __future__ import annotations

from collections.abc import Callable

from wcmatch import glob

_GLOB_FLAGS = glob.GLOBSTAR | glob.IGNORECASE | glob.DOTGLOB

#: ``matcher(relpath) -> bool`` for a POSIX path relative to the scanned directory.
Matcher = Callable[[str], bool]


def compile_patterns(patterns: list[str]) -> Matcher:
    """One matcher for all of ``patterns`` (about 1.5 µs a path, against 44 µs for compiling
    the alternatives again on every call).

    Raises:
        ValueError: wcmatch refuses them (more alternatives than its pattern limit, 1000).
    """
    try:
        return glob.compile(patterns, flags=_GLOB_FLAGS).match
    except Exception as exc:  # wcmatch's PatternLimitException is not public API
        raise ValueError(str(exc)) from None

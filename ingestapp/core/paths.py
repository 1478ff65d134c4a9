"""Filesystem paths: confinement to the configured media roots, display forms of byte names, and
opening a file so that what is read is what was checked.

POSIX file names are bytes. Inside the app a name is a ``str`` holding those bytes losslessly
(``os.fsdecode``: bytes that are not UTF-8 become lone surrogates), ``os.fsencode`` gives the exact
bytes back, and :func:`display_path` gives the form shown to people and stored as text.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO


class OutsideMediaRoots(ValueError):
    """The path, once symlinks are resolved, is not inside any media root."""


class UnusablePath(ValueError):
    """A path cannot be resolved: too long (ENAMETOOLONG), a symlink loop (ELOOP) or similar."""


def confine(path: Path, media_roots: list[Path]) -> Path:
    """Resolve ``path`` (following every symlink) and return it if it lies inside a media root.

    Raises:
        OutsideMediaRoots: the resolved path is outside every root in ``media_roots``.
        UnusablePath: the path cannot be resolved: longer than PATH_MAX, a component longer than
            NAME_MAX, a symlink loop, a NUL byte (the message says which, never the path).
    """
    if "\x00" in str(path):
        raise UnusablePath("the path contains a NUL character")
    try:
        resolved = path.resolve()
    except UnicodeEncodeError:  # a lone surrogate that no file name's bytes decode to
        raise UnusablePath("the path is not a valid file name") from None
    except RuntimeError:  # Path.resolve's "Symlink loop from ..." (Python 3.11)
        raise UnusablePath("the path is a symbolic link loop") from None
    except OSError as exc:
        raise UnusablePath(path_error(exc)) from None
    for root in media_roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise OutsideMediaRoots(str(path))


def path_error(exc: OSError) -> str:
    """What an OSError about a path means, in words, without the path (ENOENT, ENAMETOOLONG...)."""
    if exc.errno == errno.ENOENT:
        return "the path does not exist"
    if exc.errno == errno.ENAMETOOLONG:
        return "the path or one of its names is too long (PATH_MAX / NAME_MAX)"
    if exc.errno == errno.ELOOP:
        return "the path is a symbolic link loop"
    return f"the path cannot be resolved: {exc.strerror or type(exc).__name__}"


def root_of(path: Path, media_roots: list[Path]) -> Path:
    """The media root that contains the already-resolved ``path``; raises OutsideMediaRoots."""
    for root in media_roots:
        if path == root or path.is_relative_to(root):
            return root
    raise OutsideMediaRoots(str(path))


def inside(path: Path, media_roots: Sequence[Path]) -> bool:
    """Whether the already-resolved ``path`` is a media root or inside one."""
    return any(path == root or path.is_relative_to(root) for root in media_roots)


def is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (following symlinks). Unlike ``Path.is_file`` on Python
    3.11, a name too long to exist (a sidecar name built from a 255-byte file name) is False, not
    an OSError."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def display_path(name: str | bytes) -> str:
    """The display form of a file name or path: its bytes decoded as UTF-8, each byte that is not
    part of valid UTF-8 written as a ``\\xNN`` escape (``b"caf\\xe9.jpg"`` -> ``"caf\\xe9.jpg"``).

    Every other character is kept as is, control characters and bidi overrides included (JSON
    escapes them; the page isolates them). Valid text is returned unchanged, so applying it twice
    is harmless. A name that really contains ``\\xe9`` as four characters displays the same: the
    exact bytes, not the display form, identify a file.
    """
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate that came from JSON, not from a file name
        raw = name.encode("utf-8", "surrogatepass")  # type: ignore[union-attr]
    return raw.decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """``text`` for a terminal: each unprintable character (C0/C1 controls, U+2028, bidi
    overrides...; ``str.isprintable``) written as its Python escape (``\\n``, ``\\u202e``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def fd_path(fd: int) -> str:
    """A path naming exactly the open file ``fd`` (Linux ``/proc/self/fd``): opening it opens that
    same file again, with its own offset, whatever has been renamed or swapped in since."""
    return f"/proc/self/fd/{fd}"


def open_confined(path: Path, media_roots: Sequence[Path]) -> BinaryIO:
    """Open ``path`` for binary reading and check that the file actually opened lies inside
    ``media_roots`` (its real path read back from the descriptor, so a symlink swapped in between
    any earlier check and this open cannot lead outside). No roots: no check.

    Raises:
        OSError: the open fails, or (EINVAL) it is not a regular file.
        OutsideMediaRoots: the opened file is outside every media root.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if media_roots and not inside(Path(os.readlink(fd_path(fd))), media_roots):
            raise OutsideMediaRoots(path.name)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def scrub_paths(message: str, replacements: dict[str, str], media_roots: Sequence[Path]) -> str:
    """``message`` with server paths made relative: each key of ``replacements`` (an absolute path
    or ``/proc/self/fd/N``) becomes its value, then every ``<media root>/`` prefix is dropped."""
    for absolute, relative in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(absolute, relative)
    for root in sorted(media_roots, key=lambda r: -len(str(r))):
        if str(root) != "/":  # a root of "/" would strip every slash
            message = message.replace(str(root) + "/", "")
    return message

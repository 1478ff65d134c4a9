"""What every pipeline stage receives and may raise.

A stage module exposes ``NAME`` (its name in the session state) and ``run(ctx: FileContext) ->
None``. ``run`` executes in a worker process (``workpool.py``: not monkey-patched, no gevent
hub): it may block and burn CPU, but must not touch the database or the event bus. It fills
``ctx.item`` (which goes back to the job pickled: plain values only) and raises on failure; the
worker turns the exception into a message and the job into an error entry ``{file, stage,
message, time}``, and goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestapp.core.parameters import IngestParameters
from ingestapp.core.paths import fd_path, inside


class StageError(Exception):
    """A file cannot be handled by a stage; the message is shown to the user as is."""


@dataclass
class FileContext:
    """One file travelling through the stages.

    Stages read the media file through :meth:`media`, never by opening ``path`` themselves, and
    sidecars next to ``path`` through ``paths.open_confined`` with ``media_roots``.

    Attributes:
        path: absolute path of the media file as the scan listed it (its name and extension;
            sidecars are looked up next to it).
        relpath: display form of the path relative to its media root, POSIX separators (what
            the user sees; ``paths.display_path``).
        parameters: the session's validated parameters (``nsfw_threshold`` etc.).
        thumbnail_dir: directory where thumbnails are stored, keyed by content hash.
        item: the result fields, filled in by the stages (see ``new_item_fields``).
        cache: scratch space shared by the stages of this one file, e.g. ``"preview"`` (a
            reduced, orientation-corrected RGB ``PIL.Image``), ``"xmp"`` (parsed XMP), ``"kind"``
            and ``"reader"`` (what identify found) or ``"exiv2"`` (a RAW's ``raw.Exiv2Reading``).
        real_path: the file's real path at scan time (symlinks resolved); None: ``path``.
        identity: ``(st_dev, st_ino)`` seen by the scan; None: not checked (direct callers).
        media_roots: the roots sidecar reads are confined to; empty: not checked.
    """

    path: Path
    relpath: str
    parameters: IngestParameters
    thumbnail_dir: Path
    item: dict[str, Any] = field(default_factory=lambda: new_item_fields())
    cache: dict[str, Any] = field(default_factory=dict)
    real_path: str | Path | None = None
    identity: tuple[int, int] | None = None
    media_roots: Sequence[Path] = ()
    _fd: int | None = field(default=None, init=False, repr=False)
    _opened_stamp: tuple[int, int, int] | None = field(default=None, init=False, repr=False)

    def media(self) -> str:
        """A path that opens exactly the file the scan found (``/proc/self/fd/N``), for
        ``open``, ``PIL.Image.open`` and ``av.open``.

        The first call opens ``real_path`` without following a symlink in its last component
        (O_NOFOLLOW) and compares the opened file's ``(st_dev, st_ino)`` with ``identity``, so a
        file replaced after the scan, by a symlink or through a swapped directory, is never
        read. Without ``identity`` (a file scanned on another host, whose ``st_dev`` differs
        here) the opened file's real path, read back from the descriptor, must lie inside
        ``media_roots`` instead. It runs in the worker process and the descriptor stays open
        until :meth:`close`.

        Raises:
            StageError: the file is gone, unreadable, not a regular file, or not the one scanned.
        """
        if self._fd is None:
            self._fd = _open_scanned(self.real_path or self.path, self.identity, self.media_roots)
            self._opened_stamp = _stamp(self._fd)
        return fd_path(self._fd)

    def changed_since_opened(self) -> bool:
        """Whether the file :meth:`media` opened was written to since (its size, mtime or ctime
        moved): a hash and a thumbnail read at two moments would then show two contents."""
        return self._fd is not None and _stamp(self._fd) != self._opened_stamp

    def close(self) -> None:
        """Close the descriptor :meth:`media` opened, if any."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def path_replacements(self) -> dict[str, str]:
        """Server paths an error message may hold, mapped to ``relpath`` (``paths.scrub_paths``)."""
        names = {str(self.path): self.relpath, str(self.real_path or self.path): self.relpath}
        if self._fd is not None:
            names[fd_path(self._fd)] = self.relpath
        return names


def _stamp(fd: int) -> tuple[int, int, int]:
    """``(st_size, st_mtime_ns, st_ctime_ns)`` of an open file: what a write in place changes."""
    info = os.fstat(fd)
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _open_scanned(path: str | Path, identity: tuple[int, int] | None, media_roots: Sequence[Path]) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO swapped in must not block
    if identity is not None or media_roots:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise StageError("permission denied") from None
    except FileNotFoundError:
        raise StageError("file not found (deleted or moved during the ingest?)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StageError("the file was replaced by a symbolic link after the scan: not read") from None
        raise StageError(f"cannot open the file: {exc.strerror or type(exc).__name__}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise StageError("not a regular file")
    if identity is not None and (info.st_dev, info.st_ino) != identity:
        os.close(fd)
        raise StageError("the file was replaced after the scan (another file is at its path now): not read")
    if identity is None and media_roots and not inside(Path(os.readlink(fd_path(fd))), media_roots):
        os.close(fd)
        raise StageError("the file is outside the media roots now (a directory was replaced after the scan): not read")
    return fd


def new_item_fields() -> dict[str, Any]:
    """The result fields of an item before any stage ran (the ``Item`` shape of the API)."""
    return {
        "size_bytes": None,
        "mime_type": None,
        "sha256": None,
        "width": None,
        "height": None,
        "metadata": {
            "make": None,
            "model": None,
            "lens_model": None,
            "datetime_original": None,
            "exposure_time_s": None,
            "f_number": None,
            "iso": None,
            "focal_length_mm": None,
            "orientation": None,
            "gps": None,
            "duration_s": None,
            "video_codec": None,
            "fps": None,
        },
        "keywords": [],
        "rating": None,
        "score": None,
        "score_source": None,
        "nsfw_score": None,
        "nsfw": None,
        "thumbnail": None,
        "phash": None,
        "sharpness": None,
        # What a stage kept short of the file, in words (a cap it hit): the item is still ok.
        "warnings": [],
    }

"""RAW+JPEG pairs: a camera's RAW file and the JPEG (or HEIF) it wrote of the same shot.

Two files of one directory are a pair when their base names are equal ignoring case and one is
a camera RAW (``core.formats``: ``IMG_0001.CR2``) and the other a developed image of the shot
(``IMG_0001.JPG``, ``.jpeg``, ``.HEIC``, ``.heif``). Each item of a pair records the other's id
(``items.pair_id``); a RAW with two developed images pairs with the first in name order.

The scan lists each directory sorted by name, so a pair's files come one after the other: the
pairing holds back only the files sharing a name up to its first dot (one shot's files), gives
them their item ids at once, and passes them on. Limits: base names that differ in more than
letter case are not a pair, nor are files whose names other entries sort between (only the case
of "IMG_0001.CR2" with "img_0001.jpg" in a directory holding other "IMG_…" names).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from ingestapp.core.formats import is_raw
from ingestapp.core.ids import new_id

#: Extensions of the developed image a RAW pairs with (lower case, with the dot).
DEVELOPED_EXTENSIONS = (".jpg", ".jpeg", ".heic", ".heif")


class Scanned(Protocol):
    """What the pairing needs of a scanned file (``scanner.ScannedFile``)."""

    @property
    def relpath(self) -> str: ...


File = TypeVar("File", bound=Scanned)


def _split(relpath: str) -> tuple[str, str, str]:
    """(directory, base name, extension) of a POSIX relative path; the extension keeps its dot."""
    directory, _, name = relpath.rpartition("/")
    stem, dot, extension = name.rpartition(".")
    return (directory, stem, dot + extension) if dot else (directory, name, "")


def _shot(relpath: str) -> tuple[str, str]:
    """Files of one shot share this: their directory and their name up to its first dot, in any case."""
    directory, _, name = relpath.rpartition("/")
    return directory, name.split(".", 1)[0].casefold()


def pair_up(relpaths: list[str]) -> dict[str, str]:
    """The pairs among the files of one shot: each paired relpath mapped to its partner's."""
    partners: dict[str, str] = {}
    for raw in (path for path in relpaths if is_raw(path)):
        _, stem, _ = _split(raw)
        developed = next(
            (
                path for path in relpaths
                if path not in partners and _split(path)[2].lower() in DEVELOPED_EXTENSIONS
                and _split(path)[1].casefold() == stem.casefold()
            ),
            None,
        )
        if developed is not None:
            partners[raw], partners[developed] = developed, raw
    return partners


class Pairs:
    """Item ids given at scan time, so each item of a pair can name the other as it is recorded.

    Use :meth:`scan` around the scan's iterator and :meth:`take` when a file's item is recorded.
    Memory: one entry per file scanned and not yet recorded.
    """

    def __init__(self) -> None:
        self._ids: dict[str, tuple[str, str | None]] = {}

    def scan(self, found: Iterable[File], prefix: str = "") -> Iterator[File]:
        """Yield ``found`` in its order, holding back only the files of the current shot; the
        item ids are keyed by ``prefix + relpath`` (the path :meth:`take` is called with)."""
        shot: list[File] = []
        for file in found:
            if shot and _shot(file.relpath) != _shot(shot[0].relpath):
                yield from self._close(shot, prefix)
                shot = []
            shot.append(file)
        yield from self._close(shot, prefix)

    def _close(self, shot: list[File], prefix: str) -> list[File]:
        ids = {file.relpath: new_id() for file in shot}
        partners = pair_up(list(ids)) if len(shot) > 1 else {}
        for relpath, item_id in ids.items():
            partner = partners.get(relpath)
            self._ids[prefix + relpath] = (item_id, ids[partner] if partner else None)
        return shot

    def take(self, relpath: str) -> tuple[str, str | None]:
        """(item id, partner's item id or None) for the file at ``relpath``; a new id for a file
        the scan did not pass through :meth:`scan`."""
        return self._ids.pop(relpath, None) or (new_id(), None)

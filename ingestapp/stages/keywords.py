"""Stage "keywords": the file's keywords/tags from every place photo tools put them.

Sources, in this order (which is also the order of the result):

1. embedded XMP: ``dc:subject``, leaves of ``lr:hierarchicalSubject`` and ``digiKam:TagsList``;
2. IPTC IIM 4.2 dataset 2:25 (Keywords), UTF-8 or else Latin-1;
3. XMP sidecars ``name.ext.xmp`` then ``name.xmp``;
4. a tag sidecar ``name.txt``: tags separated by commas (or newlines).

Keywords are stripped, empty ones dropped, duplicates ignoring case removed (the first
occurrence keeping its place), and capped (``core.limits.cap_keywords``: at most 500 of at most 200
characters each); a cut is said in the item's ``warnings``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from pathlib import Path

from PIL import IptcImagePlugin

from ingestapp.core.limits import cap_keywords
from ingestapp.core.paths import is_file
from ingestapp.stages.base import FileContext
from ingestapp.stages.media import is_raw, kind, open_image
from ingestapp.stages.xmp import read_sidecar, xmp_sources

NAME = "keywords"

_IPTC_KEYWORDS = (2, 25)  # IPTC IIM 4.2 Application Record, dataset 25 "Keywords"
_TAG_SEPARATORS = re.compile(r"[,\r\n]")


def run(ctx: FileContext) -> None:
    """Set ``ctx.item["keywords"]`` (list of str), adding a warning to ``ctx.item["warnings"]``
    when the caps cut some; a malformed or oversized sidecar raises StageError."""
    sources = xmp_sources(ctx)
    found: list[str] = list(sources.embedded.subjects) if sources.embedded else []
    if kind(ctx) == "image" and not is_raw(ctx):  # RAW files carry their keywords in XMP
        found += iptc_keywords(ctx.media())
    for _path, fields in sources.sidecars:
        found += fields.subjects
    found += text_tags(ctx.path, ctx.media_roots)
    ctx.item["keywords"], warning = cap_keywords(found)
    if warning:
        ctx.item["warnings"].append(warning)


def iptc_keywords(path: str | Path) -> list[str]:
    """IPTC 2:25 keywords of a JPEG/TIFF (Photoshop IRB 0x0404 or TIFF tag 33723); [] if none."""
    with open_image(path) as im:
        try:
            info = IptcImagePlugin.getiptcinfo(im)
        except (SyntaxError, OSError, ValueError, IndexError, KeyError, struct.error):
            return []  # a damaged IPTC block is just "no IPTC"
    raw = (info or {}).get(_IPTC_KEYWORDS)
    values = raw if isinstance(raw, list) else [raw] if isinstance(raw, bytes) else []
    return [_decode(value) for value in values]


def text_tags(path: Path, media_roots: Sequence[Path] = ()) -> list[str]:
    """Tags from the ``name.txt`` sidecar (comma- or newline-separated), [] if there is none;
    the sidecar is read only if it lies inside ``media_roots`` (see ``read_sidecar``)."""
    sidecar = path.with_suffix(".txt")
    if sidecar == path or not is_file(sidecar):
        return []
    return _TAG_SEPARATORS.split(_decode(read_sidecar(sidecar, media_roots)))


def _decode(data: bytes) -> str:
    # IIM 1:90 may declare UTF-8 but is often missing; valid UTF-8 is rarely anything else.
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")

"""Caps with a reason (issue 16, point 3): how much one item may carry and how much of it a page
lists, in one place. A file may hold anything — a sidecar of 400,000 keywords made a catalog
commit hold the server and a catalog page weigh 31 MB — so what the stages keep is bounded, and a
truncation is said in words on the item (its ``warnings``), never silent.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Keywords one item keeps (Lightroom and digiKam libraries rarely pass a few dozen per picture).
MAX_KEYWORDS = 500
#: Characters one keyword keeps; under ``catalog_keywords.keyword``'s VARCHAR(255), which
#: PostgreSQL enforces (a longer keyword failed the whole commit there).
MAX_KEYWORD_LENGTH = 200
#: Bytes a sidecar (``.xmp``, ``.txt``, ``.json``) may have; a larger one is an error, not read.
#: Sidecars are a few KiB: 16 MiB leaves room for any real one and bounds a stage's memory.
MAX_SIDECAR_BYTES = 16 << 20
#: Keywords a catalog entry lists in ``GET /api/catalog`` and on a card (the rest: "+N more"),
#: so a page of entries stays small whatever they carry.
KEYWORDS_SHOWN = 50
#: Ends a keyword that was shortened, so a reader sees it is not whole.
_ELLIPSIS = "\u2026"


def cap_keywords(values: Iterable[str]) -> tuple[list[str], str | None]:
    """Keywords as an item keeps them, and a warning in words when some were cut.

    ``values`` are stripped, empty ones dropped, each shortened to ``MAX_KEYWORD_LENGTH``
    characters (ending in an ellipsis), then duplicates ignoring case removed (the first keeps its
    place and spelling: Lightroom and digiKam match keywords case-insensitively), and the first
    ``MAX_KEYWORDS`` kept. Returns ``(keywords, warning)``; ``warning`` is None when nothing was
    cut, else e.g. "kept 500 of 400,001 keywords; 1 keyword over 200 characters was shortened".
    Idempotent: capping kept keywords again changes nothing and warns of nothing.
    """
    unique: dict[str, str] = {}
    shortened = 0  # among the kept ones
    for value in values:
        value = value.strip()
        cut = len(value) > MAX_KEYWORD_LENGTH
        if cut:
            value = value[: MAX_KEYWORD_LENGTH - 1].rstrip() + _ELLIPSIS
        key = value.casefold()
        if value and key not in unique:
            unique[key] = value
            if cut and len(unique) <= MAX_KEYWORDS:
                shortened += 1
    kept = list(unique.values())[:MAX_KEYWORDS]
    return kept, _truncation_warning(len(unique), shortened)


def _truncation_warning(found: int, shortened: int) -> str | None:
    """The words for ``found`` distinct keywords of which ``shortened`` kept ones were cut short."""
    parts = []
    if found > MAX_KEYWORDS:
        parts.append(f"kept {MAX_KEYWORDS} of {found:,} keywords")
    if shortened:
        one = shortened == 1
        parts.append(f"{shortened:,} keyword{'' if one else 's'} over {MAX_KEYWORD_LENGTH} characters "
                      f"{'was' if one else 'were'} shortened")
    return "; ".join(parts) or None

"""Stage "scores": the user's star rating and an externally computed (e.g. aesthetic) score.

* ``rating``: ``xmp:Rating`` (-1..5) from the XMP sidecars (``name.ext.xmp``, then ``name.xmp``),
  which win over the packet embedded in the file, as photo managers write edits to sidecars.
* ``score`` / ``score_source``: key ``score`` (else ``aesthetic_score``) of a JSON sidecar
  (``name.ext.json``, then ``name.json``) -> ``"json"``; else the row of ``scores.csv`` (header
  ``filename,score``) in the file's directory whose ``filename`` equals the file's name ->
  ``"csv"``; else both None.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestapp.core.paths import OutsideMediaRoots, display_path, is_file, open_confined
from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.xmp import XmpSources, read_sidecar, xmp_sources

NAME = "scores"

SCORES_CSV = "scores.csv"
_JSON_KEYS = ("score", "aesthetic_score")


def run(ctx: FileContext) -> None:
    """Set ``rating``, ``score`` and ``score_source``; malformed sidecars raise StageError."""
    ctx.item["rating"] = xmp_rating(xmp_sources(ctx))
    score, source = json_score(ctx.path, ctx.media_roots), "json"
    if score is None:
        score, source = csv_score(ctx.path, ctx.media_roots), "csv"
    ctx.item["score"] = score
    ctx.item["score_source"] = source if score is not None else None


def xmp_rating(sources: XmpSources) -> int | None:
    """The first rating among the sidecars, else the embedded packet's, else None."""
    for _path, fields in sources.sidecars:
        if fields.rating is not None:
            return fields.rating
    return sources.embedded.rating if sources.embedded else None


def json_score(path: Path, media_roots: Sequence[Path] = ()) -> float | None:
    """The score from ``name.ext.json`` or ``name.json``; None if no sidecar carries one.
    Sidecars are read only inside ``media_roots`` (``xmp.read_sidecar``).

    Raises:
        StageError: a sidecar is not a JSON object, or its score is not a finite number.
    """
    for sidecar in dict.fromkeys([path.with_name(path.name + ".json"), path.with_suffix(".json")]):
        if sidecar == path or not is_file(sidecar):
            continue
        document = _load_json(sidecar, media_roots)
        for key in _JSON_KEYS:
            if document.get(key) is not None:
                return _number(document[key], f"{display_path(sidecar.name)} ({key})")
    return None


def _load_json(sidecar: Path, media_roots: Sequence[Path]) -> dict[str, Any]:
    name = display_path(sidecar.name)
    try:
        document = json.loads(read_sidecar(sidecar, media_roots))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"malformed JSON sidecar {name}: {exc}") from None
    if not isinstance(document, dict):
        raise StageError(f"malformed JSON sidecar {name}: expected an object")
    return document


def csv_score(path: Path, media_roots: Sequence[Path] = ()) -> float | None:
    """The score of ``path.name`` in ``scores.csv`` next to it; None if no such file or row.

    The CSV is streamed and reading stops at the matching row, so large tables stay cheap.

    Raises:
        StageError: the CSV is unreadable, lacks the ``filename,score`` header, or the row's
            score is not a number.
    """
    table = path.parent / SCORES_CSV
    if not is_file(table):
        return None
    try:
        with io.TextIOWrapper(open_confined(table, media_roots), encoding="utf-8-sig", newline="") as f:
            return _find_row_score(csv.DictReader(f), path.name)
    except OutsideMediaRoots:
        raise StageError(f"{SCORES_CSV} leads outside the media roots: not read") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StageError(f"malformed {SCORES_CSV}: {exc}") from None
    except OSError as exc:
        raise StageError(f"cannot read {SCORES_CSV}: {exc.strerror or exc}") from None


def _find_row_score(reader: csv.DictReader[str], filename: str) -> float | None:
    header = [(name or "").strip().lower() for name in reader.fieldnames or []]
    if "filename" not in header or "score" not in header:
        raise StageError(f"{SCORES_CSV} has no 'filename,score' header")
    reader.fieldnames = header
    for row in reader:
        if (row.get("filename") or "").strip() == filename:
            value = (row.get("score") or "").strip()
            return _number(value, f"{SCORES_CSV} ({filename})") if value else None
    return None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise StageError(f"invalid score in {where}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise StageError(f"invalid score in {where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise StageError(f"invalid score in {where}: {value!r} is not finite")
    return number

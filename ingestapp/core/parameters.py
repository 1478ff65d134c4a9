"""Ingest request parameters: parsing, defaults and validation.

Every rule here produces a :class:`ParameterError` naming the offending field, which the API
turns into ``400 {"error", "field"}`` — or a :class:`DirectoryNotAllowed`, ``403``.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ingestapp.core.formats import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS
from ingestapp.core.paths import OutsideMediaRoots, UnusablePath, confine, path_error
from ingestapp.core.patterns import compile_patterns
from ingestapp.core.vocabulary import OPTION_FLAGS, Parameter

__all__ = [
    "DEFAULT_PATTERN", "IMAGE_EXTENSIONS", "MEDIA_EXTENSIONS", "VIDEO_EXTENSIONS", "IngestParameters", "ParameterError",
    "parse_parameters", "split_pattern",
]

#: The default pattern: every extension of the format table (``core.formats``), in any case.
DEFAULT_PATTERN = ",".join(f"**/*{ext}" for ext in MEDIA_EXTENSIONS)


class ParameterError(ValueError):
    """A request parameter is invalid; ``field`` names it (``None`` for the body itself)."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class DirectoryNotAllowed(ParameterError):
    """A well-formed directory the server may not ingest: outside the media roots (symlinks
    resolved) or not readable by the server (EACCES)."""


@dataclass(frozen=True)
class IngestParameters:
    """What one ingest session does. ``directory`` is absolute and resolved (symlinks followed)."""

    directory: str
    pattern: str = DEFAULT_PATTERN
    extract_metadata: bool = True
    extract_keywords: bool = True
    import_scores: bool = True
    enable_nsfw_detection: bool = True
    nsfw_threshold: float = 0.7
    max_files: int | None = None
    skip_duplicates: bool = True
    #: After the scan, keep ingesting each new or changed file of ``directory`` (``jobs.watch``).
    watch: bool = False
    #: With ``watch``: commit each new ok item to the catalog as soon as it is processed.
    auto_import: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def patterns(self) -> list[str]:
        """The comma-separated glob alternatives of ``pattern``."""
        return split_pattern(self.pattern)


_BOOL_FIELDS = OPTION_FLAGS
_KNOWN_FIELDS = {f.name for f in fields(IngestParameters)}


def split_pattern(pattern: str) -> list[str]:
    """Split ``"*.jpg, **/*.png"`` into its glob alternatives; raise ParameterError if malformed."""
    parts = [p.strip() for p in pattern.split(",")]
    if not pattern.strip() or any(not p for p in parts):
        raise ParameterError("pattern must be one or more comma-separated globs", "pattern")
    for part in parts:
        if part.startswith("/") or ".." in Path(part).parts or "\x00" in part:
            raise ParameterError(f"pattern {part!r} must be relative and stay inside the directory", "pattern")
        if part.count("[") != part.count("]"):
            raise ParameterError(f"pattern {part!r} has an unbalanced '['", "pattern")
        fnmatch.translate(part)  # validates the syntax fnmatch accepts
    try:
        compile_patterns(parts)
    except ValueError as exc:
        raise ParameterError(f"pattern: {exc}", "pattern") from None
    return parts


def parse_parameters(body: Any, media_roots: list[Path]) -> IngestParameters:
    """Validate a request body (``{"parameters": {...}}`` or the flat object) against the roots.

    Raises:
        ParameterError: for a non-object body, unknown fields, wrong JSON types, a directory that
            is missing, relative, not a directory or outside ``media_roots`` (after resolving
            symlinks), a threshold outside [0, 1], ``max_files`` < 1, a malformed pattern,
            ``auto_import`` without ``watch``, or ``max_files`` with ``watch``.
    """
    if not isinstance(body, dict):
        raise ParameterError("the body must be a JSON object", None)
    raw = body.get("parameters", body) if set(body) <= {"parameters"} else body
    if not isinstance(raw, dict):
        raise ParameterError("parameters must be a JSON object", "parameters")
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise ParameterError(f"unknown field {unknown[0]!r}", unknown[0])

    values: dict[str, Any] = {"directory": str(resolve_directory(raw.get("directory"), media_roots))}
    if "pattern" in raw:
        if not isinstance(raw["pattern"], str):
            raise ParameterError("pattern must be a string", "pattern")
        split_pattern(raw["pattern"])
        values["pattern"] = raw["pattern"].strip()
    for name in _BOOL_FIELDS:
        if name in raw:
            if not isinstance(raw[name], bool):
                raise ParameterError(f"{name} must be true or false", name)
            values[name] = raw[name]
    if "nsfw_threshold" in raw:
        values["nsfw_threshold"] = _threshold(raw["nsfw_threshold"])
    if raw.get("max_files") is not None:
        values["max_files"] = _max_files(raw["max_files"])
    check_watch(bool(values.get(Parameter.WATCH)), bool(values.get(Parameter.AUTO_IMPORT)), values.get("max_files"))
    return IngestParameters(**values)


def check_watch(watch: bool, auto_import: bool, max_files: int | None) -> None:
    """The watch's combination rules (``jobs.watch``), for the CLI's ``parse_parameters`` and the
    API's request model alike.

    Raises:
        ParameterError: ``max_files`` with ``watch`` (a watch ingests every file), or
            ``auto_import`` without ``watch`` (only a watching session imports by itself).
    """
    if watch and max_files is not None:
        raise ParameterError("max_files cannot be combined with watch: a watch ingests every file", "max_files")
    if auto_import and not watch:
        raise ParameterError("auto_import needs watch: only a watching session imports by itself", "auto_import")


def resolve_directory(value: Any, media_roots: list[Path]) -> Path:
    """The directory ``value`` names, resolved (symlinks followed).

    Raises:
        DirectoryNotAllowed: it is outside ``media_roots`` or the server may not read it.
        ParameterError: missing, not a string, relative, holding a NUL, unresolvable, absent or
            not a directory.
    """
    if value is None or value == "":
        raise ParameterError("directory is required", "directory")
    if not isinstance(value, str):
        raise ParameterError("directory must be a string", "directory")
    if "\x00" in value or not os.path.isabs(value):
        raise ParameterError("directory must be an absolute path", "directory")
    try:
        resolved = confine(Path(value), media_roots)
    except OutsideMediaRoots:
        raise DirectoryNotAllowed("directory is outside the configured media roots", "directory") from None
    except UnusablePath as exc:
        raise ParameterError(f"directory: {exc}", "directory") from None
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise ParameterError("directory does not exist", "directory") from None
    except PermissionError:
        raise DirectoryNotAllowed("directory: permission denied", "directory") from None
    except OSError as exc:
        raise ParameterError(f"directory: {path_error(exc)}", "directory") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ParameterError("directory is not a directory", "directory")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise DirectoryNotAllowed("directory: permission denied (the server cannot list it)", "directory")
    return resolved


def _threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError("nsfw_threshold must be a number", "nsfw_threshold")
    if not 0.0 <= value <= 1.0:
        raise ParameterError("nsfw_threshold must be between 0 and 1", "nsfw_threshold")
    return float(value)


def _max_files(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError("max_files must be an integer", "max_files")
    if value < 1:
        raise ParameterError("max_files must be at least 1", "max_files")
    return value

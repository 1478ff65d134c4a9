"""Confinement of filesystem paths to the configured media roots."""

from __future__ import annotations

from pathlib import Path


class OutsideMediaRoots(ValueError):
    """The path, once symlinks are resolved, is not inside any media root."""


def confine(path: Path, media_roots: list[Path]) -> Path:
    """Resolve ``path`` (following every symlink) and return it if it lies inside a media root.

    Raises:
        OutsideMediaRoots: the resolved path is outside every root in ``media_roots``.
    """
    resolved = path.resolve()
    for root in media_roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise OutsideMediaRoots(str(path))


def root_of(path: Path, media_roots: list[Path]) -> Path:
    """The media root that contains the already-resolved ``path``; raises OutsideMediaRoots."""
    for root in media_roots:
        if path == root or path.is_relative_to(root):
            return root
    raise OutsideMediaRoots(str(path))

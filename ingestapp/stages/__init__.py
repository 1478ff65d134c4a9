"""The per-file pipeline: stage modules in execution order, and which ones a session runs.

Each stage module exposes ``NAME`` and ``run(ctx: FileContext) -> None`` (see ``base``). The
stages of one file run in :data:`STAGES` order and share ``ctx.cache``.

Owns the per-file work of a stage process: decoding (Pillow, pillow-heif, pillow-jxl, exiv2,
LibRaw, PyAV), metadata, keywords, scores, NSFW and thumbnails. It imports only ``core`` (the
format table, parameters, paths): no database, no events, no Flask.
"""

from __future__ import annotations

from types import ModuleType

from ingestapp.core.parameters import IngestParameters
from ingestapp.stages import identify, keywords, metadata, nsfw, scores, thumbnail

#: All stages, in the order they run for every file.
STAGES: list[ModuleType] = [identify, metadata, keywords, scores, nsfw, thumbnail]

#: The parameter that switches an optional stage on; stages not listed always run.
STAGE_OPTIONS = {
    metadata.NAME: "extract_metadata",
    keywords.NAME: "extract_keywords",
    scores.NAME: "import_scores",
    nsfw.NAME: "enable_nsfw_detection",
}


def enabled_stages(parameters: IngestParameters) -> list[ModuleType]:
    """The stages a session with ``parameters`` runs, in order (identify and thumbnail always)."""
    return [
        stage
        for stage in STAGES
        if stage.NAME not in STAGE_OPTIONS or getattr(parameters, STAGE_OPTIONS[stage.NAME])
    ]

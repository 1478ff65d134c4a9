"""The per-file pipeline: the stages in execution order, and which ones a session runs.

A stage is a module ``ingestapp.stages.<name>`` exposing ``NAME`` and ``run(ctx: FileContext) ->
None`` (see ``base``). The stages of one file run in :data:`STAGES` order and share ``ctx.cache``.

This package's ``__init__`` names the stages without importing them: the web process and the
job only need their names, while the stage processes import them (``load``) with their libraries
(PyAV, exiv2, LibRaw, onnxruntime, Pillow: a web worker starts with ~0.4 s less CPU and ~55 MB less).

Owns the per-file work of a stage process: decoding (Pillow, pillow-heif, pillow-jxl, exiv2,
LibRaw, PyAV), metadata, keywords, scores, NSFW and thumbnails. It imports only ``core`` (the
format table, parameters, paths): no database, no events, no Flask.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import Parameter, StageName


@dataclass(frozen=True)
class Stage:
    """A stage as a job sees it: its ``name``, the ``module`` (import name) a stage process runs,
    and the boolean parameter that switches it on (``option``; None: it always runs)."""

    name: str
    module: str
    option: Parameter | None = None


def _stage(name: StageName, option: Parameter | None = None) -> Stage:
    return Stage(name, f"{__name__}.{name}", option)


#: All stages, in the order they run for every file.
STAGES: list[Stage] = [
    _stage(StageName.IDENTIFY),
    _stage(StageName.METADATA, Parameter.EXTRACT_METADATA),
    _stage(StageName.KEYWORDS, Parameter.EXTRACT_KEYWORDS),
    _stage(StageName.SCORES, Parameter.IMPORT_SCORES),
    _stage(StageName.NSFW, Parameter.ENABLE_NSFW_DETECTION),
    _stage(StageName.THUMBNAIL),
]


def enabled_stages(parameters: IngestParameters) -> list[Stage]:
    """The stages a session with ``parameters`` runs, in order (identify and thumbnail always)."""
    return [stage for stage in STAGES if stage.option is None or getattr(parameters, stage.option)]


def load(stage: Stage) -> ModuleType:
    """The stage's module, imported (with its libraries) on first use."""
    return importlib.import_module(stage.module)


def stage_modules(parameters: IngestParameters) -> list[ModuleType]:
    """The modules of ``enabled_stages(parameters)``, imported: for running them in this process."""
    return [load(stage) for stage in enabled_stages(parameters)]

"""The file protocol: one file's task, the report of each stage it ran, and its result, defined once
for both ways a file runs: a stage process of the local pool (``pool.py``, over a pipe: the objects
are pickled) and the scale-out work tier (``tasks.py`` / ``remote.py``, over Celery and Redis: the
``to_dict`` forms, JSON).

A path travels as its exact bytes in hex (``os.fsencode``): a file name need not be UTF-8, and JSON
has no bytes. One rule says where a file's stages stop (:func:`stops_after`), in the stage process
and in the job replaying a work-tier result alike.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestapp.core.parameters import IngestParameters
from ingestapp.core.vocabulary import StageName


def worker_name() -> str:
    """This process's ``host:pid``: the ``worker`` of a result (a stage process, or a work-tier
    worker for the files it ran) and a work-tier worker's name in its heartbeats."""
    return f"{socket.gethostname()}:{os.getpid()}"


def path_key(path: str | Path) -> str:
    """A path's exact bytes in hex (JSON-safe): a file's key in tasks and results."""
    return os.fsencode(path).hex()


def key_path(key: str) -> Path:
    """The path of a :func:`path_key`."""
    return Path(os.fsdecode(bytes.fromhex(key)))


@dataclass(frozen=True)
class FileTask:
    """One file to process.

    ``stages`` are the stage modules' import names (``ingestapp.stages.identify`` ...), in order;
    the stage process imports each by name. ``check_duplicates``: after identify, ask the job
    whether the SHA-256 is a duplicate (the job holds the catalog's and the session's hashes).
    ``delay``: seconds the stage process waits before the stages (``INGEST_FILE_DELAY``, for
    demos and tests; applied there only). The other fields are those of
    :class:`~ingestapp.stages.base.FileContext`.
    """

    path: Path
    relpath: str
    parameters: IngestParameters
    thumbnail_dir: Path
    real_path: str | Path | None
    identity: tuple[int, int] | None  # (st_dev, st_ino) at the scan: valid on the scanning host only
    media_roots: tuple[Path, ...]
    stages: tuple[str, ...]
    check_duplicates: bool
    delay: float = 0.0

    @property
    def key(self) -> str:
        """The file's key in tasks and results (``path_key`` of its absolute path)."""
        return path_key(self.path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, for a work-tier task. ``thumbnail_dir`` and ``media_roots`` are left
        out: the receiving process uses its own (README, "Scaling out": the same paths)."""
        return {
            "key": self.key,
            "relpath": self.relpath,
            "parameters": self.parameters.to_dict(),
            "real": None if self.real_path is None else path_key(self.real_path),
            "identity": None if self.identity is None else list(self.identity),
            "host": socket.gethostname(),
            "stages": list(self.stages),
            "check_duplicates": self.check_duplicates,
            "delay": self.delay,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], thumbnail_dir: Path, media_roots: tuple[Path, ...]) -> FileTask:
        """Rebuild a task from ``to_dict`` in the process that runs it. The scan's ``identity``
        is kept only on the host that scanned (``st_dev`` differs across hosts)."""
        same_host = data["host"] == socket.gethostname()
        return cls(
            path=key_path(data["key"]),
            relpath=data["relpath"],
            parameters=IngestParameters(**data["parameters"]),
            thumbnail_dir=thumbnail_dir,
            real_path=None if data["real"] is None else os.fsdecode(bytes.fromhex(data["real"])),
            identity=tuple(data["identity"]) if same_host and data["identity"] else None,  # type: ignore[arg-type]
            media_roots=media_roots,
            stages=tuple(data["stages"]),
            check_duplicates=data["check_duplicates"],
            delay=data["delay"],
        )


@dataclass(frozen=True)
class StageReport:
    """One stage ran on the file: ``message`` is the error entry's text (None: it succeeded);
    ``seconds`` the wall time of the stage's ``run`` in the stage process (``time.perf_counter``)."""

    stage: str
    message: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{stage, message, seconds}``."""
        return {"stage": self.stage, "message": self.message, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageReport:
        """The report of a ``to_dict`` form."""
        return cls(stage=data["stage"], message=data["message"], seconds=data["seconds"])


@dataclass(frozen=True)
class Started:
    """The stage process took the file (pipe only): its time limit counts from here."""


@dataclass(frozen=True)
class Identified:
    """The stage process asks the job whether the file with this SHA-256 is a duplicate; the answer
    is a bool (pipe) or a reply on Redis (work tier)."""

    sha256: str


@dataclass(frozen=True)
class FileResult:
    """What a file's run produced.

    ``stages``: the reports of the stages that ran, in order; ``sha256``: identify's hash (None if it
    did not run); ``item``: the item fields (``new_item_fields`` shape), None when ``died``, which is
    why its process died (the error entry's message); ``worker``: the process that ran it (``host:pid``).
    """

    key: str
    worker: str
    stages: tuple[StageReport, ...] = ()
    sha256: str | None = None
    item: dict[str, Any] | None = None
    died: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the fields by name, ``stages`` as ``StageReport.to_dict`` forms."""
        return {
            "key": self.key, "worker": self.worker, "stages": [r.to_dict() for r in self.stages],
            "sha256": self.sha256, "item": self.item, "died": self.died,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        """The result of a ``to_dict`` form."""
        return cls(
            key=data["key"], worker=data["worker"], stages=tuple(StageReport.from_dict(r) for r in data["stages"]),
            sha256=data["sha256"], item=data["item"], died=data["died"],
        )


def stops_after(report: StageReport, task: FileTask, is_duplicate: Callable[[], bool]) -> bool:
    """Whether the file's stages stop after ``report``: its stage failed, or it was identify and the
    file is a duplicate (``is_duplicate`` is asked only then, and only with ``check_duplicates``)."""
    if report.message is not None:
        return True
    return report.stage == StageName.IDENTIFY and task.check_duplicates and is_duplicate()

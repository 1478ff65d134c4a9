"""A stage module the work-pool tests add to the pipeline (``stages.STAGES``): the worker
processes import it by name like any stage. What it does depends on the file's name."""

from __future__ import annotations

import io
import os
import signal
import time

from PIL import Image

from ingestapp.stages.base import FileContext, StageError

NAME = "probe"


def run(ctx: FileContext) -> None:
    """``exit*``: the process exits at once (like a decoder's abort); ``kill*``: it is killed
    (SIGKILL, like a segfault); ``slow*``: 0.5 s of work; ``hang*``: 60 s; ``fail*``: a stage error;
    ``rewrite*``: the file is rewritten in place with another picture (same inode), as a copy still
    being written would be; otherwise write ``"<pid> <niceness>"`` of the process to
    ``<thumbnail_dir>/<name>.probe``."""
    name = ctx.path.name
    if name.startswith("rewrite"):
        other = io.BytesIO()
        Image.new("RGB", (64, 48), (250, 5, 5)).save(other, "JPEG")
        with open(ctx.path, "r+b") as f:
            f.write(other.getvalue())
            f.truncate()
        return
    if name.startswith("exit"):
        os._exit(70)
    if name.startswith("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("slow"):
        time.sleep(0.5)
    if name.startswith("hang"):
        time.sleep(60)
    if name.startswith("fail"):
        raise StageError("the probe refused this file")
    ctx.thumbnail_dir.mkdir(parents=True, exist_ok=True)
    (ctx.thumbnail_dir / f"{name}.probe").write_text(f"{os.getpid()} {os.nice(0)}")

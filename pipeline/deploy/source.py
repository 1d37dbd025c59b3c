"""Which model a command means: a run directory, a checkpoint, a quoted glob of runs, or an exported .onnx.

    path = resolve_model_path("runs/quickstart-*")   # a glob: the newest match that holds a checkpoint (logged)
    classifier = open_classifier(path, weights="ema") # Classifier: uint8 NHWC -> logits, class names, eval transform

A checkpoint (or run directory) runs as eager PyTorch on the CPU (`DeployedModel`: the same graph
the export writes); an .onnx file through onnxruntime, and must carry this project's metadata.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.data.transform import EvalTransform
from pipeline.deploy.graph import DeployedModel, ModelFileError, exportable, read_metadata
from pipeline.deploy.runtime import open_session, session_runner, torch_runner
from pipeline.training.weights import find_checkpoint, read_weights

log = logging.getLogger("pipeline")


def _checkpoint_time(path: Path) -> float:
    try:
        return find_checkpoint(path).stat().st_mtime
    except Exception:  # not a run directory with a checkpoint: never the newest
        return -1.0


def resolve_model_path(text: str) -> Path:
    """A path as given; a glob pattern: its newest match holding a checkpoint (or the newest .onnx)."""
    if not glob.has_magic(text):
        return Path(text).expanduser()
    matches = [Path(m) for m in glob.glob(str(Path(text).expanduser()))]
    newest = max(matches, key=lambda p: p.stat().st_mtime if p.suffix == ".onnx" else _checkpoint_time(p),
                 default=None)
    if newest is None or (newest.suffix != ".onnx" and _checkpoint_time(newest) < 0):
        raise ModelFileError(f"{text}: no run directory, checkpoint or .onnx file matches")
    if len(matches) > 1:
        log.info("%s: %d matches; the newest: %s", text, len(matches), newest)
    return newest


@dataclass
class Classifier:
    """A model ready to classify uint8 NHWC batches of its eval transform's crop."""

    path: Path  # the file that runs: a checkpoint or an .onnx
    run: Callable[[np.ndarray], np.ndarray]  # uint8 NHWC -> logits
    classes: list[str]
    transform: EvalTransform
    notes: list[str]


def open_classifier(path: Path, weights: str = "ema") -> Classifier:
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file")
        meta = read_metadata(path)
        try:
            session = open_session(path)
        except Exception as exc:  # onnxruntime's InvalidGraph, NotImplemented, ...
            raise ModelFileError(f"{path}: onnxruntime cannot load it ({' '.join(str(exc).split())[:300]})") from None
        return Classifier(path, session_runner(session), meta.classes, meta.transform, [])
    source = read_weights(find_checkpoint(path), weights)
    module = DeployedModel(exportable(source.build_model()), source.transform)
    return Classifier(source.path, torch_runner(module), source.classes, source.transform, source.notes)

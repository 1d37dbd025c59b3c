"""The exported graph: uint8 NHWC images in, the eval transform's normalization inside, logits out.

    module = DeployedModel(network, transform)     # eager PyTorch of exactly what the ONNX file computes
    export_onnx(module, path, metadata)            # one self-contained .onnx (no .data side file)
    meta = read_metadata(path)                     # OnnxMetadata: classes, eval transform, provenance

Export traps this module closes, each with a regression test (tests/e2e/test_export_graph.py,
tests/unit/test_export.py):
- torch 2.14's exporter (`dynamo=True`) writes the weights to a separate `.data` file unless told
  `external_data=False`; a model copied without it has no weights. Here: one file.
- A network exported in training mode keeps Dropout and batch-statistics BatchNorm; here it is a copy
  put in eval mode.
- bf16 (or fp16) weights export as bf16 operators that onnxruntime's CPU provider refuses to run
  (NOT_IMPLEMENTED); here the copy is fp32, and nothing is exported under autocast.
- A channels_last network (as training leaves it, pipeline/training/step.py wrap_model) is made
  contiguous first, so the graph carries no layout ops of its own.
- DDP's `module.` and torch.compile's `_orig_mod.` wrappers are unwrapped (their state-dict prefixes:
  pipeline/training/weights.py).

Normalization runs in the graph, so a client feeds the decoded, resized, cropped pixels and nothing
else; the metadata (ONNX metadata_props, strings) says which pixels: the eval transform, the class
names, and where the weights came from.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.data.transform import EvalTransform
from pipeline.errors import UserError
from pipeline.files import atomic_write_bytes

log = logging.getLogger(__name__)

OPSET = 20  # the exporter's default for torch 2.14; onnxruntime 1.31 runs it
INPUT, OUTPUT = "images", "logits"
REQUIRED_METADATA = ("classes", "eval_transform")


class ModelFileError(UserError):
    """A model file (checkpoint or .onnx) that cannot be used; the message names it."""


class DeployedModel(nn.Module):
    """uint8 NHWC [N, crop, crop, 3] -> the eval transform's normalization -> the network -> logits [N, K]."""

    def __init__(self, network: nn.Module, transform: EvalTransform) -> None:
        super().__init__()
        self.network, self.transform = network, transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.transform.normalize_nhwc(images))


def exportable(network: nn.Module) -> nn.Module:
    """A copy of `network` as inference wants it: unwrapped (DDP, torch.compile), eval mode, fp32, contiguous."""
    while True:
        if isinstance(network, nn.parallel.DistributedDataParallel):
            network = network.module
        elif hasattr(network, "_orig_mod"):  # torch.compile's OptimizedModule
            network = network._orig_mod
        else:
            break
    network = copy.deepcopy(network).float().eval()
    return network.to(memory_format=torch.contiguous_format)


def export_onnx(module: DeployedModel, path: Path, metadata: dict[str, str]) -> None:
    """Export `module` (its network already `exportable`) to one .onnx file at `path`, batch size dynamic."""
    import onnx

    crop = module.transform.crop
    example = torch.randint(0, 256, (2, crop, crop, 3), dtype=torch.uint8)
    # The exporter prints progress lines and logs each initializer its optimizer merges: nothing to act on.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=[INPUT],
                                        output_names=[OUTPUT], dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                                        opset_version=OPSET, external_data=False, verbose=False)
        finally:
            logging.disable(logging.NOTSET)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    atomic_write_bytes(path, proto.SerializeToString())


@dataclass(frozen=True)
class OnnxMetadata:
    classes: list[str]
    transform: EvalTransform
    props: dict[str, str]  # every metadata_props entry, as stored


def read_metadata(path: Path) -> OnnxMetadata:
    """The metadata an exported model carries; ModelFileError naming the file when it is not one of ours."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [key for key in REQUIRED_METADATA if key not in props]
    if missing:
        raise ModelFileError(f"{path}: an ONNX model without this project's metadata ({', '.join(missing)} missing): "
                             "export it with python -m pipeline.export, or give the checkpoint")
    try:
        classes = json.loads(props["classes"])
        transform = EvalTransform.from_dict(json.loads(props["eval_transform"]))
    except ValueError as exc:
        raise ModelFileError(f"{path}: malformed metadata ({exc})") from None
    inputs = proto.graph.input
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        raise ModelFileError(f"{path}: expected one uint8 NHWC input, as python -m pipeline.export writes")
    return OnnxMetadata(list(classes), transform, props)


def metadata_props(**values: Any) -> dict[str, str]:
    """ONNX metadata_props are strings: lists and dicts as JSON, numbers as their repr."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items() if v is not None}

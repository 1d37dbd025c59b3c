"""The ONNX exporter end to end in one process: the parity gate on two networks, and the traps a model
exported as training leaves it falls into (external data, Dropout in training mode, bf16, channels_last).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from support.deploy import onnx, ort


@pytest.fixture(scope="module")
def trap_exports(tmp_path_factory) -> dict[str, Path]:
    """The same weights exported as a plain contiguous eval-mode network, and as training leaves one:
    channels_last, training mode, bf16, under torch.compile and DDP-style wrapping."""
    from models import build_model
    from pipeline.data.transform import EvalTransform
    from pipeline.deploy.graph import DeployedModel, export_onnx, exportable

    folder = tmp_path_factory.mktemp("traps")
    transform = EvalTransform(16, 16, "bilinear", "image", (0.5,) * 3, (0.5,) * 3, 1e-5)
    torch.manual_seed(0)
    plain = build_model("squeezenet_bypass", 10).eval()
    as_trained = build_model("squeezenet_bypass", 10)
    as_trained.load_state_dict(plain.state_dict())
    as_trained = torch.compile(as_trained.to(memory_format=torch.channels_last).to(torch.bfloat16).train())
    export_onnx(DeployedModel(exportable(plain), transform), folder / "plain.onnx", {})
    export_onnx(DeployedModel(exportable(as_trained), transform), folder / "as_trained.onnx", {})
    return {"plain": folder / "plain.onnx", "as_trained": folder / "as_trained.onnx", "folder": folder}


def ops(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_the_parity_gate_fails_when_onnxruntime_and_pytorch_disagree(tmp_path):
    """Export one network, compare another: the gate names the difference, and raises."""
    from models import build_model
    from pipeline.data.transform import EvalTransform
    from pipeline.deploy.export import GateFailed, parity
    from pipeline.deploy.graph import DeployedModel, export_onnx, exportable

    transform = EvalTransform(16, 16, "bilinear", "image", (0.5,) * 3, (0.5,) * 3, 1e-5)
    torch.manual_seed(0)
    exported_net = DeployedModel(exportable(build_model("squeezenet_bypass", 10)), transform)
    other = DeployedModel(exportable(build_model("squeezenet_bypass", 10)), transform)
    export_onnx(exported_net, tmp_path / "m.onnx", {"classes": "[]"})
    images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    assert parity(exported_net, tmp_path / "m.onnx", images)["max_abs_logit_difference"] <= 1e-4
    with pytest.raises(GateFailed, match="parity"):
        parity(other, tmp_path / "m.onnx", images)


def test_trap_external_data_the_export_is_one_file(trap_exports):
    """torch 2.14's exporter writes weights to a .data file by default: ours keeps them inside."""
    assert sorted(p.name for p in trap_exports["folder"].iterdir()) == ["as_trained.onnx", "plain.onnx"]
    model = onnx.load(str(trap_exports["plain"]), load_external_data=False)
    assert model.graph.initializer and all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert trap_exports["plain"].stat().st_size > 2_500_000  # the 747k parameters are in it


def test_trap_a_network_in_training_mode_exports_without_dropout(trap_exports):
    found = ops(trap_exports["as_trained"])
    assert "Dropout" not in found
    for node in onnx.load(str(trap_exports["as_trained"])).graph.node:
        if node.op_type == "BatchNormalization":
            assert all(a.i == 0 for a in node.attribute if a.name == "training_mode")


def test_trap_bf16_weights_export_as_fp32_that_onnxruntime_cpu_runs(trap_exports):
    model = onnx.load(str(trap_exports["as_trained"]))
    assert {t.data_type for t in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    ort.InferenceSession(str(trap_exports["as_trained"]), providers=["CPUExecutionProvider"])


def test_trap_channels_last_adds_no_layout_operators(trap_exports):
    """The channels_last (and compiled, bf16, training-mode) network exports the plain network's graph."""
    assert ops(trap_exports["as_trained"]) == ops(trap_exports["plain"])
    a = ort.InferenceSession(str(trap_exports["plain"]), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(trap_exports["as_trained"]), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    # the same network, its weights rounded to bf16 (8 bits of mantissa) on the way: within 2% of the logits' scale
    plain, as_trained = a.run(None, {"images": x})[0], b.run(None, {"images": x})[0]
    assert np.abs(plain - as_trained).max() < 0.02 * np.abs(plain).max()

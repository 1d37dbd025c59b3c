"""pipeline/deploy in one process, without the exporter: another model's checkpoint, onnxruntime's bf16
refusal, DDP and compile prefixes (the exporter itself: tests/e2e/test_export_graph.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.deploy import onnx, ort


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path):
    from models import build_model
    from pipeline.config import load_config
    from pipeline.errors import CheckpointError
    from pipeline.training.checkpoint import FORMAT_VERSION
    from pipeline.training.weights import read_weights

    cfg = load_config(None, ["model.name=squeezenet1_1"]).to_dict()  # says squeezenet1_1, holds the bypass net's
    path = tmp_path / "other.pt"
    torch.save({"format_version": FORMAT_VERSION, "config": cfg, "model": build_model("squeezenet_bypass", 10)
                .state_dict(), "counters": {}, "classes": [str(i) for i in range(10)]}, path)
    with pytest.raises(CheckpointError, match=f"{path}: its weights do not fit model.name=squeezenet1_1"):
        read_weights(path, "raw").build_model()


def test_trap_onnxruntime_cpu_refuses_bf16_convolutions():
    """What the fp32 copy avoids: a bf16 Conv graph does not load on the CPU provider."""
    h, bf16 = onnx.helper, onnx.TensorProto.BFLOAT16
    graph = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", bf16, [1, 3, 8, 8])], [h.make_tensor_value_info("y", bf16, None)],
                         [h.make_tensor("w", bf16, [4, 3, 3, 3], np.zeros(4 * 3 * 3 * 3, np.uint16).tobytes(), raw=True)])
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort.InferenceSession(h.make_model(graph, opset_imports=[h.make_opsetid("", 22)], ir_version=10)
                             .SerializeToString(),
                             providers=["CPUExecutionProvider"])


def test_trap_ddp_and_compile_prefixes_are_removed_from_state_dicts(tmp_path):
    from models import build_model
    from pipeline.config import load_config
    from pipeline.training.checkpoint import FORMAT_VERSION
    from pipeline.training.weights import read_weights, unwrapped

    net = build_model("squeezenet_bypass", 10)
    prefixed = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    assert list(unwrapped(prefixed)) == list(net.state_dict())
    path = tmp_path / "ddp.pt"
    torch.save({"format_version": FORMAT_VERSION, "config": load_config(None, []).to_dict(), "model": prefixed,
                "counters": {}, "classes": [str(i) for i in range(10)]}, path)
    rebuilt = read_weights(path, "raw").build_model()
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in net.state_dict().items())


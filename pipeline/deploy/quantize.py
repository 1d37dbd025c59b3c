"""INT8: onnxruntime's static quantization of an exported model, calibrated on training images.

    quantize_int8(fp32_path, int8_path, calibration_batches, workdir)   # QDQ, signed int8, per channel
    counts = operator_counts(int8_path)    # which operators run quantized, which stay float

onnxruntime's recipe, as its documentation gives it: `quant_pre_process` first (shape inference and
graph optimization: BatchNorm folds into the convolutions), then `quantize_static` with the QDQ format
(QuantizeLinear/DequantizeLinear pairs around each quantized operator, which the runtime fuses into
int8 kernels), signed int8 activations and weights, per-channel weight scales, MinMax calibration over
the calibration batches: training images through the eval transform, the distribution the model
sees when it is used. The graph's uint8 input and its normalization stay float; so does every
operator the quantizer has no int8 form for (`operator_counts` says which).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pipeline.deploy.graph import INPUT

QDQ = ("QuantizeLinear", "DequantizeLinear")


class CalibrationBatches:
    """onnxruntime's CalibrationDataReader over uint8 NHWC batches: one {input: batch} per get_next()."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_int8(fp32: Path, int8: Path, batches: Iterable[np.ndarray], workdir: Path) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "model.prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    reader = CalibrationBatches(batches)
    CalibrationDataReader.register(CalibrationBatches)  # an ABC: the quantizer checks isinstance
    # Its warnings go to the root logger, one per BatchNorm weight of the pre-activation units ("Axis 1 is
    # out-of-range ... rank 1": a BatchNorm scale has one axis, so it gets one scale): nothing to act on.
    logging.disable(logging.WARNING)
    try:
        quantize_static(str(prepared), str(int8), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.disable(logging.NOTSET)
    prepared.unlink(missing_ok=True)


def operator_counts(path: Path) -> dict[str, Any]:
    """{"quantized": n, "float": n, "float_types": {op: n}}: an operator runs quantized when an input of it
    comes from a DequantizeLinear (the QDQ pattern the runtime fuses); Q/DQ themselves are not counted."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    quantized, floating = 0, Counter()
    for node in graph.node:
        if node.op_type in QDQ:
            continue
        if any(name in dequantized for name in node.input):
            quantized += 1
        else:
            floating[node.op_type] += 1
    return {"quantized": quantized, "float": sum(floating.values()), "float_types": dict(floating)}

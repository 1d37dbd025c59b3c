"""From a trained run to a model people use: ONNX export (fp32, int8), its gates, and classification of files.

    python -m pipeline.export RUN_DIR|CHECKPOINT [--int8]           # export/model.onnx, model.int8.onnx, export.json
    python -m pipeline.predict MODEL PATH... [--topk 5] [--format table|csv|jsonl]
    python -m pipeline.bench export [MODEL]                          # onnxruntime throughput (pipeline/bench/export.py)

    graph.py     the exported graph (uint8 NHWC in, normalization inside, logits out), its metadata, the export traps
    runtime.py   onnxruntime sessions, accuracy through the project's DALI eval graph, latency
    quantize.py  int8: onnxruntime static QDQ quantization, per channel, and which operators stay float
    source.py    which model a command means (run directory, checkpoint, glob, .onnx) and a classifier of it
    export.py    the export command: export, parity gate, accuracy, int8 gate, the table
    predict.py   the predict command

The entry modules pipeline/export.py and pipeline/predict.py only call these. Imports go to the root,
pipeline.data, pipeline.runs, pipeline.training (the checkpoint's weights) and models; pipeline.bench's
`export` kind uses runtime.py.
"""

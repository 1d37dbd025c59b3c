"""The library: typed config, DALI input pipelines, the distributed trainer, run records, benchmarks, tools.

Packages, in the order their imports go (each imports only from those above it):

    pipeline/             config/ (the schema), sources.py (one row per data source), errors.py (UserError
                          and exit codes), constants.py, distributed.py (process group, collectives, device
                          sync), entry.py (CLI skeleton),
                          sections.py (the named sections of the hot path the overhead ledger reads)
    pipeline/data/        where images come from and how they reach the device: sources (tar shards
                          too) and their writer, the sharded index plans, decode-once, the DALI graphs,
                          the loaders (DALI, torchvision, synthetic)
    pipeline/runs/        what a run leaves behind: run directory (and its lock), metrics.jsonl, W&B,
                          summary.json, resolved values, data fingerprint, run clock, curves, console
                          progress, and which run a command continues (continuation)
    pipeline/training/    the loop and what it is made of: trainer, components, step, checkpoint,
                          EMA, optimizer, schedule, precision, meters, preemption, time to accuracy,
                          and what `auto` becomes on this machine (resolve)
    pipeline/deploy/      from a trained run to a model people use: ONNX export (fp32, int8) and its gates,
                          classification of image files (`python -m pipeline.export`, `pipeline.predict`:
                          the entry modules pipeline/export.py and pipeline/predict.py belong to this layer)
    pipeline/bench/       throughput benchmarks and the host-overhead ledger, built on the same public
                          builders as training
    pipeline/tools/       tools beside the trainer: compare and sweep (they read run directories),
                          launch (launch.sh's run naming, torchrun, and the report of how a run ended)

`data/` and the root know nothing of training or run records; `runs/` knows nothing of the loop
(what it needs of the checkpoint counters is a protocol); `training/` uses `data/` and `runs/`;
`deploy/` uses `training/` (a checkpoint's weights); `bench/` and `tools/` sit on top. tests/unit/test_layout.py checks these directions and that no module
imports another's `_private` names.
"""

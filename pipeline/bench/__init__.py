"""Throughput benchmarks: how many images per second each part delivers, and where the time goes.

    python -m pipeline.bench loader  [CONFIG] [key=value ...]   # input pipeline alone, per backend
    python -m pipeline.bench model   [CONFIG] [key=value ...]   # the config's training step on synthetic input (--all: every model)
    python -m pipeline.bench train   [CONFIG] [key=value ...]   # end to end, real vs synthetic input
    python -m pipeline.bench scaling [CONFIG] [key=value ...]   # `train` at 1..N processes (torchrun)
    python -m pipeline.bench doctor  [CONFIG] [key=value ...]   # where the bottleneck is, and the knob to turn
    python -m pipeline.bench overhead [CONFIG] [key=value ...]  # host work per step: ops, microseconds, reads
    python -m pipeline.bench budget --budget 2m [CONFIG] [...]  # whole runs against train.time_budget (--load N)
    python -m pipeline.bench report  [DIR]                      # the tables of every results.json in DIR
    python -m pipeline.bench export  [MODEL]                    # onnxruntime img/s of an exported model (export.py)

Options (before or after the overrides): --steps N, --warmup N, --repeats N, --out DIR, and each
kind's own (`python -m pipeline.bench KIND --help`): loader --backends/--stages, model
--all/--models/--precisions/--formats/--compile/--batch-sizes/--size, train --feeds, scaling --nproc,
budget --budget/--load/--load-at (with --repeats and --out only: it times whole runs, pipeline/bench/budget.py).

Method: warm-up steps are run and discarded (DALI buffer growth, cudnn autotuning, compilation);
each repeat times `steps` steps between two device synchronizations; images/sec = images
processed / wall time; the median of the repeats is quoted with the min-max spread. Backends
and configurations are measured one after another in the same process, each alone (interleaving
them would let one loader's background prefetching run during another's timing), so their
ratios come from one run. Every result file records the machine, the versions, the git revision and the
exact settings. Outputs: a table on the console, results.json and chart.png in --out (default
bench-results/<kind>-<time>/), and a W&B `benchmark` job unless wandb.mode=disabled.

Modules: `measure` (timing), `loader`, `model`, `train` (also `scaling`), `doctor`, `overhead`, `budget`, `roofline`, `report`
(tables, charts, results.json, W&B), `__main__` (the command line). Every benchmark builds its
loaders, models and steps through the same public functions as the trainer (pipeline.data,
pipeline.training); nothing here imports trainer.py, and nothing below imports pipeline.bench.
"""

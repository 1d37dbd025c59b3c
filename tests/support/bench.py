"""Benchmark settings that keep a measured kind to a few steps (tests/unit/test_bench_cli.py, tests/e2e/test_bench.py).
"""

from __future__ import annotations

FAST = ["--steps=2", "--warmup=1", "--repeats=2", "wandb.mode=disabled", "data.num_threads=1",
        "data.train.min_side=34", "data.train.max_side=38", "data.train.crop=32",
        "train.global_batch_size=16"]


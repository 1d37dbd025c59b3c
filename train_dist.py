"""Train an image classifier: the entry point torchrun runs (or run it as a single process).

    torchrun --nproc_per_node=8 train_dist.py configs/squeezenet_cifar10.yaml optim.lr=0.2
    python train_dist.py configs/quickstart.yaml train.epochs=2       # one process

Arguments: an optional YAML config, then `key.sub=value` overrides (see README, "Configuration").
Exit status: 0 done, 2 bad config/data/checkpoint, 4 non-finite loss, 75 preempted (checkpoint
written; run the same command again to continue), 1 anything else.
"""

from __future__ import annotations

import sys

from pipeline.entry import exit_now, run_entry


def train(cfg, dist) -> int:
    from pipeline.training.trainer import Trainer  # torch loads after the config check

    return Trainer(cfg, dist).fit()


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    return run_entry(argv, train)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))

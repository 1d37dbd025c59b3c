"""Train an image classifier: the entry point torchrun runs (or run it as a single process).

    torchrun --nproc_per_node=8 train_dist.py configs/squeezenet_cifar10.yaml optim.lr=0.2
    python train_dist.py configs/quickstart.yaml train.epochs=2       # one process

Arguments: an optional YAML config, then `key.sub=value` overrides (see README, "Configuration").
Exit status: 0 done, 2 bad config/data/checkpoint, 4 non-finite loss, 75 preempted (checkpoint
written; run the same command again to continue), 1 anything else.
"""

from __future__ import annotations

import logging
import sys

from pipeline.checkpoint import CheckpointError
from pipeline.config import ConfigError, config_from_cli
from pipeline.data import BadImageError, DataError
from pipeline.rundir import RunDirError

log = logging.getLogger("pipeline")
USER_ERRORS = (ConfigError, DataError, BadImageError, CheckpointError, RunDirError, ValueError)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    cfg = config_from_cli(argv)
    if cfg is None:
        return 2

    import torch  # noqa: F401  (after the config check: bad input fails fast, before heavy imports)

    from pipeline import distributed
    from pipeline.trainer import ExitCode, Trainer

    dist = distributed.init_distributed(cfg.dist.backend, cfg.dist.timeout_s)
    try:
        cfg.check_world_size(dist.world_size)
        return int(Trainer(cfg, dist).fit())
    except USER_ERRORS as exc:
        print(f"error{f' (rank {dist.rank})' if dist.world_size > 1 else ''}: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    finally:
        distributed.destroy()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

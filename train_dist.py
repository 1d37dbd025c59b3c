"""Train an image classifier: the entry point torchrun runs (or run it as a single process).

    torchrun --nproc_per_node=8 train_dist.py configs/squeezenet_cifar10.yaml optim.lr=0.2
    python train_dist.py configs/quickstart.yaml train.epochs=2       # one process
    python train_dist.py configs/quickstart.yaml model.num_classes=auto --resolve   # what `auto` becomes here

Arguments: an optional YAML config, then `key.sub=value` overrides (docs/configuration.md lists
every key). --resolve prints the config with its `auto` values resolved on this machine (it lists
the data) and trains nothing. The run directory is runs/<logging.run_name>; the same command with
the same logging.run_name continues a stopped run from its latest checkpoint.
Exit status: 0 done, 2 bad config/data/checkpoint, 4 non-finite loss, 74 a file could not be written
(a full disk, a quota: fix that, then the command printed at the end continues the run), 75
preempted (checkpoint written; the command printed at the end continues the run), 1 anything else.
"""

from __future__ import annotations

import signal
import sys

from pipeline.entry import exit_now, listen_for_the_launcher, run_entry, tell_the_agent
from pipeline.errors import Interrupted


def stop_now(signum: int, frame: object) -> None:
    """Until the trainer can checkpoint (pipeline/training/preemption.py), a stop signal ends the start-up."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the request is taken: a repeat must not interrupt the exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tell_the_agent()  # (not when it is the launcher stopping the job: pipeline/entry.py LAUNCHER_STOP)
    raise Interrupted(signum, f"{signal.Signals(signum).name} received during start-up: stopping now")


def train(cfg, dist) -> int:
    try:
        if cfg.eval.only:  # a checkpoint's evaluation: no run is started or continued
            from pipeline.training.eval_only import evaluate_only

            return evaluate_only(cfg, dist)
        from pipeline.training.trainer import Trainer  # torch loads after the config check

        return Trainer(cfg, dist).fit()
    finally:
        # The run has ended (or is ending on an error it has reported): a late stop request, such as
        # the agent stopping the other workers, changes nothing and must not interrupt the exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


def resolve(argv: list[str]) -> int:
    from pipeline.config import config_from_cli
    from pipeline.entry import print_user_error
    from pipeline.errors import ExitCode, UserError

    cfg = config_from_cli(argv)
    if cfg is None:
        return int(ExitCode.BAD_INPUT)
    from pipeline.training.resolve import resolved_yaml

    try:
        sys.stdout.write(resolved_yaml(cfg))
    except UserError as exc:  # the data cannot be listed: one line naming the path
        print_user_error(exc)
        return int(ExitCode.BAD_INPUT)
    return 0


def main(argv: list[str]) -> int:
    listen_for_the_launcher()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_now)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if "--resolve" in argv:
        return resolve([a for a in argv if a != "--resolve"])
    return run_entry(argv, train)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))

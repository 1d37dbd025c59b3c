"""Which run a launch.sh command trains, the run lock, a failed start-up's directory, and the commands
printed to continue a run. Run directories are written by hand here (config.yaml as the trainer
writes it, summary.json with an ending); tests/e2e/test_launch.py runs the real thing end to end.

    pytest tests/unit/test_continuation.py
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.constants import REPO_ROOT as REPO
from pipeline.errors import CheckpointError, LaunchError, RunDirError
from pipeline.runs.continuation import direct_command, latest_run_of, read_run_state, setup_differences
from pipeline.runs.envinfo import git_revision
from pipeline.runs.rundir import RunDir, RunLock, discard_failed_start, is_default_run_name, supersede
from pipeline.tools.launch import choose_run_name, ending, same_command
from pipeline.training.checkpoint import FORMAT_VERSION

ARGS = ["configs/quickstart.yaml", "train.epochs=3"]


def config(runs: Path, *extra: str):
    return load_config(ARGS[0], [*ARGS[1:], f"logging.runs_dir={runs}", *extra])


def make_run(runs: Path, name: str, end: str | None, *extra: str, **summary) -> Path:
    """A run directory as the trainer leaves it: config.yaml (num_classes resolved) and, unless killed, summary.json."""
    cfg = config(runs, *extra, f"logging.run_name={name}")
    if cfg.model.num_classes == "auto":
        cfg.model.num_classes = 10
    run = runs / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    if end is not None:
        (run / "summary.json").write_text(json.dumps({"end/reason": end, "end/global_step": 42,
                                                      "end/epochs_done": 1, **summary}))
    return run


def choose(runs: Path, *extra: str, new: bool = False, **env: str) -> str | None:
    return choose_run_name(config(runs, *extra), [*ARGS, *extra], new, env)


def write_checkpoint(path: Path, step: int, **changes) -> None:
    """A file that loads as a checkpoint at `step` (the keys CheckpointManager writes, nearly empty)."""
    torch.save({"format_version": FORMAT_VERSION, "model": {}, "optimizer": {}, "scheduler": {},
                "counters": {"epoch": 0, "step_in_epoch": step, "global_step": step}, "config": {}, "world_size": 1,
                "rank_states": [{}], **changes}, path)


def test_a_new_setup_gets_a_new_timestamped_name(tmp_path):
    name = choose(tmp_path)
    assert is_default_run_name(name, "quickstart") and not (tmp_path / name).exists()


@pytest.mark.parametrize("end", ["preempted", "crashed", "nonfinite", "bad_input", None])  # None: killed
def test_the_same_command_continues_an_unfinished_run(tmp_path, end, capsys):
    make_run(tmp_path, "quickstart-20260101-000000", "finished")
    make_run(tmp_path, "quickstart-20260102-000000", end)
    assert choose(tmp_path) == "quickstart-20260102-000000"
    err = capsys.readouterr().err
    assert err.startswith("launch.sh: continuing run quickstart-20260102-000000: it ")
    assert "./launch.sh --new configs/quickstart.yaml train.epochs=3 starts a new run instead" in err


def test_the_newest_run_of_the_same_setup_is_continued_not_the_newest_run(tmp_path):
    make_run(tmp_path, "quickstart-20260101-000000", "preempted")                     # this setup
    make_run(tmp_path, "quickstart-20260102-000000", "preempted", "optim.lr=0.2")     # another setup, newer
    make_run(tmp_path, "hand-named", "preempted")                                     # not named by launch.sh
    assert choose(tmp_path) == "quickstart-20260101-000000"
    assert choose(tmp_path, "optim.lr=0.2") == "quickstart-20260102-000000"
    assert is_default_run_name(choose(tmp_path, "optim.lr=0.3"), "quickstart")
    assert choose(tmp_path, "optim.lr=0.3") not in {p.name for p in tmp_path.iterdir()}


def test_a_finished_run_is_not_trained_again_and_the_message_says_how_to_start_anew(tmp_path, capsys):
    make_run(tmp_path, "quickstart-20260101-000000", "preempted")
    make_run(tmp_path, "quickstart-20260102-000000", "finished", **{"final/top1": 0.5, "best/top1": 0.6,
                                                                     "best/epoch": 2})
    assert choose(tmp_path) is None  # the newest of this setup finished: an older unfinished one is not taken
    err = capsys.readouterr().err
    assert "quickstart-20260102-000000" in err and "finished" in err and "final top-1 50.00%, best 60.00%" in err
    assert err.rstrip().endswith("./launch.sh --new configs/quickstart.yaml train.epochs=3")
    assert is_default_run_name(choose(tmp_path, new=True), "quickstart")  # --new: a new run
    # A named run that finished: also nothing to train, unless the setup changed (more epochs).
    assert choose(tmp_path, RUN_NAME="quickstart-20260102-000000") is None
    assert choose(tmp_path, "train.epochs=4", RUN_NAME="quickstart-20260102-000000") == "quickstart-20260102-000000"
    assert choose(tmp_path, "eval.only=true", RUN_NAME="quickstart-20260102-000000") == "quickstart-20260102-000000"


def test_the_continuing_line_says_where_the_run_resumes(tmp_path, capsys):
    run = make_run(tmp_path, "quickstart-20260101-000000", "crashed")
    assert choose(tmp_path) == run.name
    assert ("launch.sh: continuing run quickstart-20260101-000000: it crashed at step 42 (1 of 3 epochs done); it "
            "wrote no checkpoint, so it starts from the beginning (./launch.sh --new ") in capsys.readouterr().err
    write_checkpoint(run / "last.pt", 3)
    write_checkpoint(run / "step-00000004.pt", 4)
    (run / "best.pt").write_bytes(b"")  # skipped: another checkpoint loads
    assert choose(tmp_path) == run.name
    assert "42 (1 of 3 epochs done); it resumes from step-00000004.pt (step 4) (" in capsys.readouterr().err


def test_a_run_none_of_whose_checkpoints_loads_is_refused_with_the_commands_that_go_on(tmp_path, capsys):
    run = make_run(tmp_path, "quickstart-20260101-000000", "crashed")
    (run / "last.pt").write_bytes(b"")
    write_checkpoint(run / "best.pt", 4, format_version=2)  # as after an upgrade
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError) as info:
        choose(tmp_path)
    assert str(info.value) == (
        f"run {run.name} ({run}) holds checkpoints and none of them loads: last.pt: empty file (0 bytes); best.pt: "
        f"written in checkpoint format 2 by an earlier version of this code; this code (git {git_revision()}) reads "
        "format 3. Nothing in the run was changed. To go on: put a good copy of one of these files back; or finish it "
        "with the code that wrote it; or start a new run: ./launch.sh --new configs/quickstart.yaml train.epochs=3; "
        f"or start this run over, its files moved into {run.name}/superseded-<time>/ (nothing is deleted): "
        f"RUN_NAME={run.name} ./launch.sh configs/quickstart.yaml train.epochs=3 checkpoint.on_unreadable=restart")
    with pytest.raises(CheckpointError):  # by its name too
        choose(tmp_path, RUN_NAME=run.name)
    assert "continuing run" not in capsys.readouterr().err  # no claim that it resumes

    # The suggested command continues the same run (the key says how to continue, not what is trained).
    assert choose(tmp_path, "checkpoint.on_unreadable=restart", RUN_NAME=run.name) == run.name
    assert choose(tmp_path, "checkpoint.on_unreadable=restart") == run.name
    assert "none of its checkpoints loads, so it starts over (checkpoint.on_unreadable=restart)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the launcher moves nothing: the trainer does


def test_a_run_that_starts_over_moves_its_files_aside_whole(tmp_path):
    run = make_run(tmp_path, "r", "crashed")
    for name in ("last.pt", "metrics.jsonl", "wandb-run-id", ".lock", "train.log"):
        (run / name).write_text(name)
    (run / "wandb" / "offline-run-1").mkdir(parents=True)
    (run / "wandb" / "offline-run-1" / "run-1.wandb").write_text("history")
    aside = supersede(run)
    assert aside is not None and aside.parent == run and aside.name.startswith("superseded-")
    assert sorted(p.name for p in run.iterdir()) == sorted([".lock", "train.log", aside.name])  # the session's own
    assert sorted(str(p.relative_to(aside)) for p in aside.rglob("*") if p.is_file()) == [
        "config.yaml", "last.pt", "metrics.jsonl", "summary.json", "wandb-run-id", "wandb/offline-run-1/run-1.wandb"]
    assert (aside / "last.pt").read_text() == "last.pt"
    assert supersede(run) is None  # nothing more to move


def test_given_names_and_several_nodes(tmp_path):
    assert choose(tmp_path, RUN_NAME="mine") == "mine"
    assert choose(tmp_path, "logging.run_name=given") == "given"
    assert choose(tmp_path, NNODES="2", SLURM_JOB_ID="4242") == "quickstart-4242"
    with pytest.raises(LaunchError, match=r"NNODES > 1: give RUN_NAME="):
        choose(tmp_path, NNODES="2")  # nodes cannot agree on a name they each look up
    with pytest.raises(LaunchError, match=r"--new starts a run under a new name"):
        choose(tmp_path, new=True, RUN_NAME="mine")


def test_an_evaluation_starts_no_run_and_needs_the_run_or_the_checkpoint_named(tmp_path, capsys):
    make_run(tmp_path, "quickstart-20260101-000000", "preempted", "eval.only=true")  # nothing to continue for it
    with pytest.raises(LaunchError, match=r"eval.only: name the run whose latest checkpoint to evaluate \(RUN_NAME="):
        choose(tmp_path, "eval.only=true")
    assert choose(tmp_path, "eval.only=true", f"checkpoint.resume={tmp_path}/qs-1/best.pt") == "qs-1"
    assert choose(tmp_path, "eval.only=true", RUN_NAME="qs-2") == "qs-2"
    assert capsys.readouterr().err == ""  # no "continuing run" and no "starting a new run"


def test_a_run_being_trained_is_not_trained_twice(tmp_path):
    run = make_run(tmp_path, "quickstart-20260101-000000", None)
    lock = RunLock(run)
    try:
        with pytest.raises(LaunchError, match=r"is being trained now \(pid \d+ on .*\); wait for it to end, or start "
                                              r"another run beside it: ./launch.sh --new configs/quickstart.yaml"):
            choose(tmp_path)
        with pytest.raises(RunDirError, match=r"another training process is using it \(pid \d+ on "):
            RunLock(run)
    finally:
        lock.release()
    assert RunLock.in_use(run) is None and choose(tmp_path) == "quickstart-20260101-000000"


def test_setup_differences_ignore_the_run_s_name_and_a_resolved_class_count(tmp_path):
    run = make_run(tmp_path, "a", "preempted", "model.num_classes=auto", "wandb.name=x")
    saved = read_run_state(run).config
    assert saved["model.num_classes"] == 10
    assert setup_differences(saved, config(tmp_path, "model.num_classes=auto", "logging.run_name=b")) == []
    assert setup_differences(saved, config(tmp_path, "model.num_classes=auto", "optim.lr=0.2")) == [
        "optim.lr: 0.1 there, 0.2 here"]
    assert latest_run_of(config(tmp_path)) is None  # "a" is not a name launch.sh gives


def test_a_failed_start_removes_only_a_directory_it_made(tmp_path):
    made, earlier = tmp_path / "made", tmp_path / "earlier"
    for path in (made, earlier):
        path.mkdir()
        (path / "train.log").write_text("start-up lines\n")
    handler = logging.FileHandler(made / "train.log")
    logging.getLogger().addHandler(handler)
    discard_failed_start(RunDir(made, created=True, lock=None))
    discard_failed_start(RunDir(earlier, created=False, lock=None))
    assert not made.exists() and handler not in logging.getLogger().handlers
    assert (earlier / "train.log").read_text() == "start-up lines\n"


def test_the_continue_command_is_the_same_command():
    env = {"NNODES": "1"}
    assert same_command(["configs/x.yaml", "schedule.milestones=[10,20]"], env) == (
        "./launch.sh configs/x.yaml 'schedule.milestones=[10,20]'")
    assert same_command(["--new", "train.epochs=2"], env) == "./launch.sh train.epochs=2"  # it names its run now
    assert same_command(["a=1"], {"LAUNCH_AS": "sbatch scripts/slurm.sbatch"}, run_name="r-1") == (
        "RUN_NAME=r-1 sbatch scripts/slurm.sbatch a=1")
    assert shlex.split(same_command(["data.root=/my images"], env))[1] == "data.root=/my images"


def test_the_ending_line_and_status_come_from_summary_json(tmp_path):
    run = make_run(tmp_path, "quickstart-20260101-000000", "preempted")
    state = read_run_state(run)
    status, line = ending(state, 143, ARGS, {}, started=0.0)
    assert status == 75
    assert line == ("run quickstart-20260101-000000 was preempted at step 42 (1 of 3 epochs done). To continue it: "
                    "./launch.sh configs/quickstart.yaml train.epochs=3")
    status, line = ending(state, 143, ARGS, {"RUN_NAME": "quickstart-20260101-000000"}, started=0.0)
    assert line.endswith("To continue it: RUN_NAME=quickstart-20260101-000000 ./launch.sh configs/quickstart.yaml "
                         "train.epochs=3")
    stale = ending(state, 1, ARGS, {}, started=(run / "summary.json").stat().st_mtime + 60)  # an earlier session's
    assert stale[0] == 1 and "stopped before its first checkpoint" in stale[1]
    assert ending(read_run_state(tmp_path / "never-made"), 2, ARGS, {}, started=0.0) == (
        2, "nothing was trained: the workers stopped at start-up (the error is above)")
    done = read_run_state(make_run(tmp_path, "quickstart-20260102-000000", "finished"))
    assert ending(done, 0, ARGS, {}, started=0.0) == (0, "")


def test_after_a_refusal_the_last_line_is_its_way_forward_not_the_refused_command(tmp_path):
    """RUN_NAME=X ./launch.sh ... optim.lr=0.05 on a run trained with 0.1: the workers refuse (exit 2), and the
    launcher's last line gives the two commands that go on, never the one that was just refused."""
    from pipeline.tools.launch import refused_changes

    run = make_run(tmp_path, "quickstart-20260101-000000", "preempted")
    write_checkpoint(run / "last.pt", 42)  # a checkpoint to continue from
    words, env = [*ARGS, "optim.lr=0.05"], {"RUN_NAME": run.name, "NPROC": "2"}
    cfg = config(tmp_path, "optim.lr=0.05", f"logging.run_name={run.name}")  # as the launcher's torchrun step sees it
    status, line = ending(read_run_state(run), 2, words, env, started=time.time() + 60, cfg=cfg)
    assert status == 2
    accept = ("RUN_NAME=quickstart-20260101-000000 NPROC=2 ./launch.sh configs/quickstart.yaml train.epochs=3 "
              "optim.lr=0.05 'checkpoint.accept_changes=[optim.lr]'")
    new = "NPROC=2 ./launch.sh --new configs/quickstart.yaml train.epochs=3 optim.lr=0.05"
    assert line == ("run quickstart-20260101-000000 was not continued: it was trained with other values of optim.lr "
                    f"(above). To continue it with the new values, recording the change: {accept}; to train them in "
                    f"a new run instead: {new}")
    assert not line.endswith(shlex.join(["./launch.sh", *words]))  # what main's launcher offered: the refused one
    # The first command continues the run without a refusal; the second is a new run.
    accepted = shlex.split(accept)[3:]
    accepted_cfg = config(tmp_path, *accepted[2:], f"logging.run_name={run.name}")
    assert refused_changes(read_run_state(run), accepted_cfg) == []
    assert choose(tmp_path, *accepted[2:], RUN_NAME=run.name) == run.name
    assert is_default_run_name(choose(tmp_path, "optim.lr=0.05", new=True), "quickstart")
    # Another start-up error of an existing run (its data gone, say): the same command, once fixed.
    status, line = ending(read_run_state(run), 2, ARGS, {"RUN_NAME": run.name}, started=time.time() + 60,
                          cfg=config(tmp_path, f"logging.run_name={run.name}"))
    assert line == ("run quickstart-20260101-000000 was not continued: its workers stopped at start-up on the error "
                    "above; once that is fixed, the same command continues it: RUN_NAME=quickstart-20260101-000000 "
                    "./launch.sh configs/quickstart.yaml train.epochs=3")


def test_a_new_run_beside_an_unfinished_run_of_the_config_says_so_and_how_to_continue_that_one(tmp_path, capsys):
    old = make_run(tmp_path, "quickstart-20260101-000000", "preempted", "schedule.milestones=[1]")
    name = choose(tmp_path, "optim.lr=0.05")  # the changed command, without a run name: a new run
    assert is_default_run_name(name, "quickstart") and name != old.name
    (line,) = capsys.readouterr().err.strip().splitlines()
    prefix = (f"launch.sh: starting a new run {name}: run {old.name} of this config is unfinished (it was preempted "
              "at step 42 (1 of 3 epochs done)) and was trained with optim.lr=0.1, schedule.milestones=[1.0]; to "
              "continue it instead: ")
    assert line.startswith(prefix), line
    command = shlex.split(line[len(prefix):])
    assert command[:2] == [f"RUN_NAME={old.name}", "./launch.sh"]
    continued = load_config(command[2], command[3:] + [f"logging.runs_dir={tmp_path}"])
    assert setup_differences(read_run_state(old).config, continued) == []  # that command continues it as it was
    assert choose(tmp_path, *command[4:], RUN_NAME=old.name) == old.name
    capsys.readouterr()
    for quiet in (lambda: choose(tmp_path, "optim.lr=0.05", new=True),  # --new: a new run is what was asked
                  lambda: choose(tmp_path, "schedule.milestones=[1]")):  # the same setup: it is continued
        quiet()
        assert "starting a new run" not in capsys.readouterr().err
    (old / "summary.json").write_text(json.dumps({"end/reason": "finished"}))  # a finished run: nothing to say
    choose(tmp_path, "optim.lr=0.07")
    assert "starting a new run" not in capsys.readouterr().err


def test_the_continue_command_keeps_the_launchers_variables():
    """NPROC=2 ./launch.sh ...: the command that continues the run has NPROC=2 (and NNODES, MASTER_ADDR, ...);
    launch.sh's defaults and the variables each node sets for itself are left out."""
    env = {"NPROC": "2", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
           "LOCAL_ADDR": "10.0.0.2", "MAX_RESTARTS": "0", "VENV": str(REPO / ".venv"), "OMP_NUM_THREADS": "4"}
    assert same_command(["train.epochs=2"], env, run_name="r") == (
        "RUN_NAME=r NPROC=2 NNODES=2 MASTER_ADDR=10.0.0.1 ./launch.sh train.epochs=2")
    slurm = {**env, "LAUNCH_AS": "sbatch scripts/slurm.sbatch", "MAX_RESTARTS": "3"}  # it derives the rendezvous
    assert same_command(["a=1"], slurm, run_name="r") == "RUN_NAME=r NPROC=2 MAX_RESTARTS=3 sbatch scripts/slurm.sbatch a=1"
    state = read_run_state(Path("/nonexistent"))
    assert ending(state, 1, ["a=1"], {**env, "RUN_NAME": "r"}, started=0.0)[1] == (
        "nothing was trained: the workers stopped at start-up (the error is above)")


def test_a_run_stopped_on_bad_input_ends_with_the_fix_not_the_same_command(tmp_path):
    state = read_run_state(make_run(tmp_path, "quickstart-20260101-000000", "bad_input"))
    status, line = ending(state, 2, ARGS, {}, started=0.0)
    assert status == 2
    assert line == ("run quickstart-20260101-000000 stopped on bad input at step 42 (1 of 3 epochs done). Remove or "
                    "replace the file named above, then continue it: ./launch.sh configs/quickstart.yaml "
                    "train.epochs=3; or leave bad files out: RUN_NAME=quickstart-20260101-000000 ./launch.sh "
                    "configs/quickstart.yaml train.epochs=3 data.check_images=skip")
    # The setup with data.check_images=skip differs, so only the run's name continues it: RUN_NAME does.
    assert choose(tmp_path, "data.check_images=skip", RUN_NAME=state.name) == state.name


def test_a_run_stopped_on_a_full_disk_ends_with_exit_74_and_the_fix_before_the_command(tmp_path):
    state = read_run_state(make_run(tmp_path, "quickstart-20260101-000000", "io_error"))
    status, line = ending(state, 74, ARGS, {}, started=0.0)
    assert status == 74
    assert line == ("run quickstart-20260101-000000 stopped on a file it could not write at step 42 (1 of 3 epochs "
                    "done) (named above; the checkpoints written before it are kept). Free space on "
                    f"{tmp_path} (or raise the quota, or move logging.runs_dir), then continue it: ./launch.sh "
                    "configs/quickstart.yaml train.epochs=3")


def test_direct_command_for_one_process_and_for_torchrun():
    argv = ["train_dist.py", "configs/quickstart.yaml", "logging.run_name=old", "wandb.tags=[a b]"]
    plain = shlex.split(direct_command("r", argv, env={}))
    assert plain[1:] == ["train_dist.py", "configs/quickstart.yaml", "wandb.tags=[a b]", "logging.run_name=r"]
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2",
                "TORCHELASTIC_MAX_RESTARTS": "1"}
    assert direct_command("r", argv[:2], env=torchrun) == (
        "torchrun --standalone --nproc-per-node=2 --max-restarts=1 train_dist.py configs/quickstart.yaml "
        "logging.run_name=r")
    nodes = direct_command("r", argv[:2], env={**torchrun, "WORLD_SIZE": "4"})
    assert nodes.startswith("on each of the 2 nodes: torchrun --nnodes=2 --nproc-per-node=2")


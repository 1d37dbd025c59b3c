"""launch.sh: --help; the same command continues a preempted run and then says the run finished; a killed worker,
several nodes.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.runs.metrics import read_metrics
from runs import REPO, TINY, assert_same_tensors, launch_env, load_ckpt

# Shards follow the global rank and the step is deterministic, so how the ranks are spread over
# nodes must not change a bit of the result.
ARGS = [*TINY, "train.deterministic=true", "train.epochs=1", "train.max_steps_per_epoch=4"]


def launch(runs: Path | str, console: Path, env: dict[str, str], repo: Path = REPO) -> subprocess.Popen:
    """`repo`/launch.sh on the tiny settings; its console output goes to `console`."""
    with open(console, "w") as out:
        return subprocess.Popen(["./launch.sh", *ARGS, f"logging.runs_dir={runs}"], cwd=repo,
                                env=launch_env(**env), stdout=out, stderr=subprocess.STDOUT)


def finish(procs: list[subprocess.Popen], consoles: list[Path], expect_ok: bool = True) -> list[str]:
    try:
        for proc in procs:
            proc.wait(timeout=180)
    finally:  # a hung rendezvous must not outlive the test: torchrun stops its workers on SIGTERM
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    outputs = [console.read_text() for console in consoles]
    for proc, console, out in zip(procs, consoles, outputs):
        assert (proc.returncode == 0) == expect_ok, f"{console.name}: exit {proc.returncode}\n{out[-5000:]}"
    return outputs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def progress(counters: dict) -> dict:
    """The counters without the run clocks (seconds differ between any two runs)."""
    tta_epochs = {level: entry["epoch"] for level, entry in counters["tta"].items()}
    return {**{k: v for k, v in counters.items() if k not in ("wall_seconds", "train_seconds", "tta")},
            "tta": tta_epochs}


def node_view(root: Path) -> Path:
    """What a node sees: the same code (links to this checkout) and a local runs/ of its own."""
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name != "runs":
            (root / entry.name).symlink_to(entry)
    return root


def worker_pid(agent: int, local_rank: int, timeout: float = 60) -> int:
    """The pid of the agent's worker process of `local_rank` (its environment says LOCAL_RANK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in subprocess.run(["pgrep", "-P", str(agent)], capture_output=True, text=True).stdout.split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"LOCAL_RANK={local_rank}".encode() in env:
                return int(child)
        time.sleep(0.1)
    raise AssertionError(f"no worker of local rank {local_rank} under {agent}")


@pytest.mark.slow
def test_two_nodes_through_launch_sh_train_what_one_node_with_two_processes_trains(tmp_path):
    runs = tmp_path / "runs"  # the shared run directory
    nodes = dict(NNODES="2", NPROC="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                 LOCAL_ADDR="127.0.0.1", RUN_NAME="two-nodes", LOGLEVEL="INFO")  # torchrun reports its rendezvous
    # The reference starts alongside the two nodes: their start-ups overlap on two CPU cores.
    consoles = [tmp_path / f"node{rank}.txt" for rank in (0, 1)]
    procs = [launch(runs, console, {**nodes, "NODE_RANK": str(rank)}) for rank, console in enumerate(consoles)]
    console = tmp_path / "one-node.txt"
    reference = launch(runs, console, dict(NPROC="2", RUN_NAME="one-node"))  # torchrun --standalone
    outputs = finish(procs, consoles)
    finish([reference], [console])
    assert sum("done: final top-1" in out for out in outputs) == 1  # global rank 0 reports, once
    for out in outputs:
        assert "run_id                   : two-nodes" in out and "group_world_size=2" in out
        assert "master_addr=127.0.0.1" in out  # LOCAL_ADDR, not this machine's host name

    two, one = runs / "two-nodes", runs / "one-node"
    assert not list(two.glob(".shared-check-*"))  # the run directory check cleans up after itself
    final_two, final_one = read_metrics(two / "metrics.jsonl")[-1], read_metrics(one / "metrics.jsonl")[-1]
    assert final_two["val/top1"] == final_one["val/top1"] and final_two["val/loss"] == final_one["val/loss"]
    ckpt_two, ckpt_one = load_ckpt(two / "last.pt"), load_ckpt(one / "last.pt")
    assert ckpt_two["world_size"] == ckpt_one["world_size"] == 2
    assert progress(ckpt_two["counters"]) == progress(ckpt_one["counters"])
    assert_same_tensors(ckpt_one["model"], ckpt_two["model"], "model")
    assert_same_tensors(ckpt_one["optimizer"], ckpt_two["optimizer"], "optimizer")


@pytest.mark.slow
def test_nodes_without_a_shared_run_directory_stop_before_training(tmp_path):
    # Two nodes, each with its own local disk: the same command with logging.runs_dir=runs, started in
    # two directories. Rank 0 would write checkpoints the other node never sees, and on resume that
    # node's rank would load whatever its own runs/<name> holds. Every rank must stop at start-up.
    nodes = dict(NNODES="2", NPROC="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
                 LOCAL_ADDR="127.0.0.1", RUN_NAME="local-disks")
    views = [node_view(tmp_path / f"node{rank}") for rank in (0, 1)]
    consoles = [tmp_path / f"node{rank}.txt" for rank in (0, 1)]
    procs = [launch("runs", console, {**nodes, "NODE_RANK": str(rank)}, repo=view)
             for rank, (view, console) in enumerate(zip(views, consoles))]
    outputs = finish(procs, consoles, expect_ok=False)  # torchrun reports the workers' exit 2 as 1
    for out in outputs:  # both nodes' consoles say why, whichever node got rank 0
        assert "logging.runs_dir must be one shared file-system path" in out, out[-3000:]
        assert "epoch 1/" not in out  # nothing trained
    message = next(line for line in outputs[0].splitlines() if "logging.runs_dir must be" in line)
    local = [str(view / "runs" / "local-disks") for view in views]
    assert (f"run directory {local[0]} (rank 0 on " in message and "rank 1 on " in message
            and f"finds no such directory at {local[1]}" in message) or (
            f"run directory {local[1]} (rank 0 on " in message and f"finds no such directory at {local[0]}" in message)
    for view in views:
        assert not list((view / "runs").rglob(".shared-check-*"))


@pytest.mark.slow
def test_launch_sh_help_prints_usage_and_exits_0():
    proc = subprocess.run(["./launch.sh", "--help"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Launch training under torchrun") and "--new" in proc.stdout
    assert "Arguments: [--new] [CONFIG.yaml] [key=value ...]" in proc.stdout


@pytest.mark.slow
def test_an_input_error_the_workers_find_is_the_error_line_and_the_launchers_summary_alone(tmp_path):
    """A bad key stops in launch.sh's `name` step; a missing data root is found by the workers at start-up.
    Its output is the worker's one line and the launcher's summary: no `E... api.py:...] failed
    (exitcode: 2)` line from torchrun's agent in between."""
    proc = subprocess.run(["./launch.sh", *TINY, f"logging.runs_dir={tmp_path}", "data.source=imagefolder",
                           "data.root=/nonexistent/data"], cwd=REPO, env=launch_env(NPROC="1"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert proc.stdout.strip().splitlines() == [
        "error: data.root: /nonexistent/data does not exist",
        "launch.sh: workers exited (rank 0: 2)",
        "launch.sh: nothing was trained: the workers stopped at start-up (the error is above)"]


def test_the_agents_own_lines_about_its_workers_are_told_by_the_launcher(capsys):
    """torchrun's `failed (exitcode: N)` line goes (the launcher names the worker and how it ended); before the agent
    stops the other workers after a failure, each is told (LAUNCHER_STOP_SIGNAL) so that it takes torchrun's
    SIGTERM for what it is, and a SIGTERM the agent receives meanwhile is no stop request."""
    import logging

    from pipeline.constants import LAUNCHER_STOP_SIGNAL
    from pipeline.tools.launch import AgentLog

    def record(message: str, *args) -> logging.LogRecord:  # as torch/distributed/elastic/multiprocessing/api.py logs
        return logging.LogRecord("torch.distributed.elastic.multiprocessing.api", logging.ERROR, "api.py", 1002,
                                 message, args, None)

    failed = "failed (exitcode: %s) local_rank: %s (pid: %s) of binary: %s"
    agent = AgentLog(max_restarts=1)
    survivor = subprocess.Popen(["sleep", "60"])  # a worker still running: the signal's default ends it
    try:
        assert not agent.filter(record("Sending process %s closing signal %s", survivor.pid, "SIGTERM"))
        assert survivor.wait(timeout=10) == -LAUNCHER_STOP_SIGNAL and agent.stopping
    finally:
        survivor.kill()
    assert not agent.filter(record(failed, -9, 1, 4242, "python")) and not agent.stopping
    assert capsys.readouterr().err == ("launch.sh: local rank 1 (pid 4242) was killed by signal 9 (SIGKILL); "
                                       "restarting the workers (restart 1 of MAX_RESTARTS=1): they resume from the "
                                       "run's latest checkpoint\n")
    assert not agent.filter(record(failed, 1, 0, 4243, "python"))  # the second failure: no restart left
    assert capsys.readouterr().err == ""  # the launcher's last lines say it (who_ended)
    agent.stop_requested = True  # a stop request: the agent stops its workers, no one ended
    other = subprocess.Popen(["sleep", "60"])
    try:
        assert not agent.filter(record("Sending process %s closing signal %s", other.pid, "SIGTERM"))
        assert other.poll() is None and not agent.stopping  # not told: its SIGTERM is the user's stop request
    finally:
        other.kill()
    assert agent.filter(record("Unable to shutdown process %s via %s, forcefully exiting via %s", 1, "SIGTERM", "SIGKILL"))


@pytest.mark.slow
def test_a_killed_worker_is_named_first_its_peers_errors_folded_and_the_continue_command_keeps_nproc(tmp_path):
    """NPROC=2 ./launch.sh ..., then SIGKILL to rank 1: one line naming rank 1 and signal 9 before the ending, no
    gloo traceback and no SIGTERM nobody sent, rank 0's traceback in the run directory, a continue command with
    NPROC=2 that resumes the run with two processes."""
    runs = tmp_path / "runs"
    args = [*TINY, "train.epochs=2", "train.max_steps_per_epoch=40", "checkpoint.every_steps=4",
            f"logging.runs_dir={runs}"]
    console = tmp_path / "console.txt"
    with open(console, "w") as out:
        job = subprocess.Popen(["./launch.sh", *args], cwd=REPO, env=launch_env(NPROC="2"), stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list(runs.glob("*/step-00000004.pt")):
            assert job.poll() is None and time.monotonic() < deadline, console.read_text()[-3000:]
            time.sleep(0.05)
        rank1 = worker_pid(job.pid, 1)
        os.kill(rank1, signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    out = console.read_text()
    assert job.returncode == 1, out[-3000:]
    (run,) = runs.iterdir()
    tail = out[out.index(f"launch.sh: rank 1 (pid {rank1})"):].strip().splitlines()
    assert tail[0] == (f"launch.sh: rank 1 (pid {rank1}) was killed by signal 9 (SIGKILL); the other workers were "
                       f"stopped (their tracebacks: {run / 'rank0-error.log'})"), out[-3000:]
    assert len(tail) == 2 and tail[1].startswith(f"launch.sh: run {run.name} crashed at step "), out[-3000:]
    assert "Traceback" not in out and "Connection reset" not in out and "SIGTERM" not in out, out[-3000:]
    assert "Traceback" in (run / "rank0-error.log").read_text()
    command = tail[1].split("To continue it: ", 1)[1]
    assert shlex.split(command) == ["NPROC=2", "./launch.sh", *args]
    again = subprocess.run(["bash", "-c", command], cwd=REPO, env=launch_env(), capture_output=True, text=True,
                           timeout=240)  # NPROC only from the command
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 process(es) on cpu" in again.stderr and "resumed from" in again.stderr
    assert load_ckpt(run / "last.pt")["world_size"] == 2


def test_launch_sh_refuses_a_run_none_of_whose_checkpoints_loads_with_one_line_and_exit_2(tmp_path):
    """The launcher decides which run the command continues: it must not say that run resumes, nor start it."""
    runs = tmp_path / "runs"
    args = [*ARGS, f"logging.runs_dir={runs}"]
    run = runs / "quickstart-20260101-000000"  # as launch.sh named it; a crash left an emptied last.pt
    run.mkdir(parents=True)
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [*args, f"logging.run_name={run.name}"])
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "last.pt").write_bytes(b"")
    proc = subprocess.run(["./launch.sh", *args], cwd=REPO, env=launch_env(NPROC="1"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"launch.sh: error: run {run.name} ({run}) holds checkpoints and none of them loads: "
                           "last.pt: empty file (0 bytes). Nothing in the run was changed.")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "last.pt"]


@pytest.mark.slow
def test_the_same_command_continues_a_preempted_run_and_then_trains_nothing(tmp_path):
    runs = tmp_path / "runs"
    args = [*TINY, "train.deterministic=true", "train.epochs=2", "train.max_steps_per_epoch=12",
            "checkpoint.every_steps=4", f"logging.runs_dir={runs}"]  # no run name: launch.sh names it
    env = launch_env(NPROC="1")
    console = tmp_path / "first.txt"
    with open(console, "w") as out:
        first = subprocess.Popen(["./launch.sh", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/step-00000004.pt")):
        assert first.poll() is None and time.monotonic() < deadline, console.read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)  # launch.sh exec'd the launcher: this is torchrun's agent, as under SLURM
    first.wait(timeout=60)
    out = console.read_text()
    assert first.returncode == 75, out[-3000:]
    assert "Traceback" not in out and "SignalException" not in out  # torchrun's 25 lines, summarised in one
    last = out.strip().splitlines()[-1]
    assert last.startswith("launch.sh: run quickstart-") and " was preempted at step " in last, out[-2000:]
    command = last.split("To continue it: ", 1)[1]
    assert shlex.split(command) == ["NPROC=1", "./launch.sh", *args]  # the same command, word for word
    (name,) = [p.name for p in runs.iterdir()]

    again = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"launch.sh: continuing run {name}: it was preempted at step " in again.stderr
    assert "; it resumes from step-000000" in again.stderr  # the preemption's checkpoint, as the workers then do
    assert "resumed from" in again.stderr and [p.name for p in runs.iterdir()] == [name]
    assert load_ckpt(runs / name / "last.pt")["counters"]["global_step"] == 24

    third = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stderr[-3000:]
    message = third.stderr.strip().splitlines()[-1]
    assert message.startswith(f"launch.sh: run {name} (") and "finished at step 24" in message
    assert "nothing to train for this command" in message and message.endswith(shlex.join(["NPROC=1", "./launch.sh",
                                                                                           "--new",
                                                                                           "configs/quickstart.yaml",
                                                                                           *args]))
    assert "run directory:" not in third.stderr and [p.name for p in runs.iterdir()] == [name]  # no training


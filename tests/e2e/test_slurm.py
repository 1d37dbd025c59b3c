"""scripts/slurm.sbatch outside SLURM: run with bash under fake srun, scancel and scontrol.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs import REPO

JOB_ID = "4242"


# srun: one task per node (SLURM_NODEID 0..SLURM_NNODES-1), the highest task status returned. Like
# the real one it answers SIGTERM by killing its tasks (SIGKILL). The tasks run in the fake
# directory, so the batch script's `./launch.sh` is the stand-in below, with the real command line.
FAKE_SRUN = r"""#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
cd "$FAKE_DIR"
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURMD_NODENAME=node$node "$@" &
    pids+=($!)
done
echo "${pids[@]}" > "$FAKE_DIR/step.pids"
trap 'echo "srun: forcing job termination" >&2; kill -KILL "${pids[@]}" 2>/dev/null' TERM
status=0
for pid in "${pids[@]}"; do
    while :; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done
    (( code > status )) && status=$code
done
exit $status
"""


# scancel --signal=SIG JOBID: the signal goes to the processes of the job's steps (the tasks).
FAKE_SCANCEL = r"""#!/usr/bin/env bash
[[ "$1" == --signal=* && "$2" == "$SLURM_JOB_ID" ]] || { echo "fake scancel: unexpected $*" >&2; exit 1; }
kill -s "${1#--signal=}" $(cat "$FAKE_DIR/step.pids")
"""


FAKE_SCONTROL = r"""#!/usr/bin/env bash
if [[ "$1 $2" == "show hostnames" ]]; then
    for ((node = 0; node < SLURM_NNODES; node++)); do echo "node$node"; done
else
    echo "scontrol $*" >> "$FAKE_DIR/events.log"
fi
"""


# The training step on one node, as STEP says: run until SIGTERM, then take a moment (the
# checkpoint) and exit 75 as the workers do; or finish (0), fail (1), or stop at once with 75.
STAND_IN_LAUNCH = r"""#!/usr/bin/env bash
log="$FAKE_DIR/events.log"
echo "node=$NODE_RANK local=$LOCAL_ADDR run=$RUN_NAME nnodes=$NNODES master=$MASTER_ADDR:$MASTER_PORT args=$*" >> "$log"
case "$STEP" in
    run) trap 'echo "node=$NODE_RANK SIGTERM" >> "$log"; sleep 0.3; echo "node=$NODE_RANK exit 75" >> "$log"; exit 75' TERM
         touch "$FAKE_DIR/started-$NODE_RANK"
         for _ in $(seq 1500); do sleep 0.02; done; exit 3 ;;  # 30 s: never outlive the test
    finish) exit 0 ;;
    fail) exit 1 ;;
    preempted) exit 75 ;;
esac
"""


class FakeCluster:
    """A directory with the fake commands; runs the batch script as SLURM would, in its own session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL), ("scontrol", FAKE_SCONTROL),
                           ("launch.sh", STAND_IN_LAUNCH)):
            (root / name).write_text(text)
            (root / name).chmod(0o755)
        self.jobs: list[subprocess.Popen] = []

    def sbatch(self, step: str, *args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k not in ("RUN_NAME", "MASTER_PORT", "MAX_RESTARTS")}
        env.update(PATH=f"{self.root}:{env['PATH']}", FAKE_DIR=str(self.root), STEP=step, VENV=sys.prefix,
                   SLURM_JOB_ID=JOB_ID, SLURM_NNODES="2", SLURM_JOB_NODELIST="node[0-1]",
                   SLURM_SUBMIT_DIR=str(REPO))
        job = subprocess.Popen(["bash", str(REPO / "scripts" / "slurm.sbatch"), *args], cwd=self.root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.jobs.append(job)
        return job

    def events(self) -> list[str]:
        """What the stand-in steps and scontrol did, in order."""
        return (self.root / "events.log").read_text().splitlines()

    def requeues(self) -> list[str]:
        return [line for line in self.events() if line.startswith("scontrol ")]

    def starts(self) -> list[str]:
        return sorted(line for line in self.events() if " run=" in line)

    def kill_all(self) -> None:
        """A batch script that died early must not leave its step running."""
        for job in self.jobs:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def cluster(tmp_path):
    fake = FakeCluster(tmp_path)
    yield fake
    fake.kill_all()


def finish(job: subprocess.Popen) -> str:
    _, err = job.communicate(timeout=30)
    return err


@pytest.mark.slow
def test_usr1_stops_the_step_requeues_once_and_the_next_run_keeps_the_name(cluster):
    job = cluster.sbatch("run", "configs/quickstart.yaml", "train.epochs=3")
    deadline = time.monotonic() + 20
    while not all((cluster.root / f"started-{node}").exists() for node in (0, 1)):
        assert job.poll() is None, finish(job)
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.02)
    job.send_signal(signal.SIGUSR1)
    err = finish(job)
    assert job.returncode == 0, err
    assert "requeueing job 4242" in err
    # Both nodes were stopped and had ended before the job was requeued, exactly once.
    stops = cluster.events()[2:]
    assert sorted(stops[:4]) == ["node=0 SIGTERM", "node=0 exit 75", "node=1 SIGTERM", "node=1 exit 75"]
    assert stops[4:] == [f"scontrol requeue {JOB_ID}"]
    first = cluster.starts()
    assert first == [f"node={node} local=node{node} run=quickstart-{JOB_ID} nnodes=2 master=node0:{20000 + 4242} "
                     "args=configs/quickstart.yaml train.epochs=3" for node in (0, 1)]

    # The requeued job: same id, same run name; it finishes and is not requeued again.
    (cluster.root / "events.log").unlink()
    again = cluster.sbatch("finish", "configs/quickstart.yaml", "train.epochs=3")
    err = finish(again)
    assert again.returncode == 0, err
    assert cluster.starts() == first
    assert cluster.requeues() == []


@pytest.mark.slow
@pytest.mark.parametrize("step, job_status, requeued", [
    ("finish", 0, False),
    ("fail", 1, False),
    ("preempted", 0, True),  # exit 75 without USR1: a checkpoint was written, run again
])
def test_step_exit_status_decides_requeue(cluster, step, job_status, requeued):
    job = cluster.sbatch(step)
    err = finish(job)
    assert job.returncode == job_status, err
    assert cluster.requeues() == ([f"scontrol requeue {JOB_ID}"] if requeued else [])
    assert len(cluster.starts()) == 2
    assert all(f"run=quickstart-{JOB_ID} " in line for line in cluster.starts())  # the default config's stem


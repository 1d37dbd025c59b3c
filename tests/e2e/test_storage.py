"""A run meeting storage limits: a file size limit, a full disk during a checkpoint write, an unwritable run directory.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from runs import REPO, TINY, load_ckpt, run_env, run_train, train_command


def limit_file_size(nbytes: int):
    """For a child process: files it writes stop at `nbytes` (EFBIG, "File too large"), as a quota would."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return limit


def assert_fix_the_environment(proc: subprocess.CompletedProcess, run_dir: Path, reason: str) -> None:
    """Exit 74, the one line naming last.pt in the console and train.log, no traceback, the fix before the command."""
    line = f"error: cannot write {run_dir / 'last.pt'}: {reason}"
    assert proc.returncode == 74, proc.stderr[-3000:]
    assert line in proc.stderr.splitlines() and "Traceback" not in proc.stderr
    assert line in (run_dir / "train.log").read_text()
    hint = proc.stderr.strip().splitlines()[-1]
    assert hint.startswith(f"run {run_dir.name} stopped at step ") and "a file could not be written" in hint
    assert f"Free space on {run_dir.parent}" in hint and hint.endswith(f"logging.run_name={run_dir.name}")
    assert json.loads((run_dir / "summary.json").read_text())["end/reason"] == "io_error"
    assert not [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs: a real ENOSPC. Needs root (or CAP_SYS_ADMIN); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip() or made.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_checkpoint_that_meets_a_file_size_limit_ends_with_one_line_and_exit_74(tmp_path):
    """Runs everywhere: RLIMIT_FSIZE makes the checkpoint write fail as a full disk does (EFBIG)."""
    proc = subprocess.run(train_command() + [*TINY, f"logging.runs_dir={tmp_path}", "logging.run_name=limited",
                                             "train.epochs=1"],
                          cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=240,
                          preexec_fn=limit_file_size(4 << 20))  # a checkpoint is about 6 MB
    assert_fix_the_environment(proc, tmp_path / "limited", "File too large")
    assert not (tmp_path / "limited" / "last.pt").exists()


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one_and_says_free_space(small_disk):
    run_dir = small_disk / "full"
    # Epoch 1's last.pt (about 6 MB) fits; epoch 2's temporary file beside it does not.
    proc = run_train(small_disk, "full", "checkpoint.save_best=false", check=False)
    assert_fix_the_environment(proc, run_dir, "No space left on device")
    kept = load_ckpt(run_dir / "last.pt")
    assert kept["counters"]["epoch"] == 1  # the previous checkpoint, whole


@pytest.mark.slow
def test_unwritable_run_directory_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the runs directory should be")
    proc = run_train(blocker, "x", check=False, timeout=60)
    assert proc.returncode == 2 and f"run directory {blocker / 'x'}: not writable" in proc.stderr


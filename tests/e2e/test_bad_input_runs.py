"""Bad input met by a real run: a bad config before a run directory exists, start-up checks, a corrupt or huge image, a
non-finite loss, one rank's bad image, no API key written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.training import checkpoint as ckpt_io
from runs import REPO, TINY, load_ckpt, run_env, run_train, train_command


def test_an_inf_learning_rate_stops_before_a_run_directory_exists(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train_dist.py"), "optim.lr=inf",
                           f"logging.runs_dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config error: optim.lr: Input should be a finite number (got 'inf')"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_good_checkpoints(tmp_path):
    proc = run_train(tmp_path, "nan", "train.epochs=3", "train.debug_nan_step=8", "train.nonfinite_limit=3",
                     check=False)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "the loss was NaN/inf for" in proc.stderr and "consecutive steps" in proc.stderr
    # What to do, truthfully: a resumed run keeps the checkpoint's learning rate.
    assert "a new optim.lr does not apply to a resumed run" in proc.stderr
    assert "a lower learning rate needs a new run (e.g. optim.lr=0.05)" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run nan stopped on a non-finite loss; to continue it from its latest checkpoint: ")
    assert last.endswith(" train.nonfinite_limit=3 logging.run_name=nan")
    last = load_ckpt(tmp_path / "nan" / "last.pt")
    assert last["counters"]["epoch"] == 1  # epoch 2 never finished, and its NaN weights were not saved
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.source=imagefolder", "data.root=/nonexistent/data"], "data.root: /nonexistent/data does not exist"),
        (["model.name=squeezenet1_0", "data.train.min_side=40", "data.train.max_side=44", "data.train.crop=40",
          "data.eval.size=8", "data.eval.crop=8"],
         "data.eval.crop: the network cannot take 8x8 inputs"),
        (["model.num_classes=100"], "model.num_classes: 100, but the data has 10 classes; set model.num_classes=10, "
                                    "or model.num_classes=auto"),
        (["logging.run_name=../escape"], "logging.run_name: '../escape' must be a plain directory name"),
        (["logging.run_name=/tmp/abs"], "logging.run_name: '/tmp/abs' must be a plain directory name"),
    ],
    ids=["missing-root", "eval-too-small", "classes", "dotdot", "absolute"],
)
def test_startup_checks_fail_before_training(tmp_path, overrides, message):
    proc = run_train(tmp_path, "startup", *overrides, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "epoch 1/" not in proc.stderr  # nothing trained
    assert list(tmp_path.iterdir()) == []  # and no run directory left behind, whichever check stopped it


@pytest.mark.slow
def test_apex_on_a_machine_without_cuda_is_a_config_error(tmp_path):
    """NVIDIA apex installed but no GPU: one line naming optim.impl and exit 2, not FusedSGD's traceback."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    # A stand-in for an installed apex: its FusedSGD refuses to build without the CUDA extensions,
    # as apex/optimizers/fused_sgd.py does on a CPU-only machine.
    stub = tmp_path / "site" / "apex" / "optimizers"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text("class FusedSGD:\n    def __init__(self, *args, **kwargs):\n"
                                      "        raise RuntimeError('apex.optimizers.FusedSGD requires cuda extensions')\n")
    path = os.pathsep.join(p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH")) if p)
    proc = run_train(tmp_path, "apex", "optim.impl=apex", "train.epochs=1", check=False, timeout=60,
                     env={"PYTHONPATH": path})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: optim.impl: apex (NVIDIA apex FusedSGD) runs only on CUDA GPUs")


@pytest.mark.slow
def test_corrupt_image_in_a_folder_names_the_file(tmp_path):
    from conftest import write_imagefolder

    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 40, "b": 40}, "val": {"a": 4, "b": 4}})
    bad = tree / "train" / "b" / "017.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    proc = run_train(tmp_path, "badimg", "data.source=imagefolder", f"data.root={tree}", "model.num_classes=2",
                     "train.epochs=1", "train.max_steps_per_epoch=0", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{bad}: cannot decode" in proc.stderr
    # Small same-size images are decoded once at start-up (data.cache=auto), so the bad file is found
    # before the run directory opens: nothing is left behind, and the same command runs once it is fixed.
    assert not (tmp_path / "badimg").exists()


@pytest.mark.slow
def test_a_bad_image_met_mid_run_is_bad_input_named_and_its_fix_given(tmp_path):
    """data.cache=off: nothing decodes the files before DALI, so a bad one is met mid-run (here at step 5
    of 6 in the first epoch, an order fixed by the seed). Exit 2, the file named in the user's terms,
    end/reason bad_input, the checkpoints kept, and a last line whose advice is the fix (remove the file,
    or data.check_images=skip), not a crash report."""
    from conftest import write_imagefolder

    tree = write_imagefolder(tmp_path / "tree", {"train": {"a": 100, "b": 100}, "val": {"a": 4, "b": 4}})
    bad = tree / "train" / "b" / "x.jpg"  # a JPEG start marker, then random bytes (the file)
    bad.write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes())
    proc = run_train(tmp_path, "midrun", "data.source=imagefolder", f"data.root={tree}", "model.num_classes=2",
                     "data.cache=off", "checkpoint.every_steps=2", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: 1 undecodable image(s): {bad}: cannot decode (corrupt JPEG header)" in proc.stderr
    assert " at 0x" not in proc.stderr and "crashed" not in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "midrun" / "summary.json").read_text())
    assert summary["end/reason"] == "bad_input" and summary["end/exit_code"] == 2
    step = summary["end/global_step"]
    assert step >= 2 and (tmp_path / "midrun" / ckpt_io.step_path(Path(), step - step % 2).name).is_file()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run midrun stopped at step {step} on bad input (named above). Remove or replace "
                           "the file, then continue it from its latest checkpoint: "), last
    assert last.endswith(" data.check_images=skip logging.run_name=midrun"), last


@pytest.mark.slow
def test_wandb_api_key_is_never_written(tmp_path):
    secret = "0123456789abcdef-not-a-real-key-fedcba9876543210"
    proc = subprocess.run(train_command() + [*TINY, f"logging.runs_dir={tmp_path}", "logging.run_name=sec",
                                             "wandb.mode=offline", "train.epochs=1"],
                          cwd=REPO, env=run_env({"WANDB_API_KEY": secret}), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in (tmp_path / "sec").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "last.pt" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"the API key leaked into {path}"


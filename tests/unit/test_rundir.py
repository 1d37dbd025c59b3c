"""pipeline/runs/rundir.py: where a run resumes and when it starts over with its files aside; opening a run directory.
"""

from __future__ import annotations

import pytest
import torch
from support.resume import complete_checkpoint

from pipeline.config import load_config
from pipeline.distributed import DistInfo
from pipeline.training import checkpoint as ckpt_io


def test_where_a_run_resumes_and_when_it_starts_over_with_its_files_aside(tmp_path):
    """find_resume in one process: the checkpoint that got furthest (best.pt when last.pt is emptied); none
    loading is refused with every file kept; on_unreadable=restart and resume=never move the files aside."""
    config = load_config(None, []).to_dict()

    def resume_point(*overrides: str):
        cfg = load_config(None, list(overrides))
        cpu = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        return ckpt_io.CheckpointManager(cfg.checkpoint, tmp_path, cpu, cfg.to_dict(), cfg.train.epochs).find_resume()

    def at(step: int) -> dict:
        return complete_checkpoint(config=config, counters={"epoch": step // 6, "step_in_epoch": step % 6,
                                                            "global_step": step})

    for name, step in (("last.pt", 6), ("best.pt", 6), ("step-00000004.pt", 4)):
        torch.save(at(step), tmp_path / name)
    assert resume_point().path.name == "last.pt"  # equal progress: last.pt before best.pt
    (tmp_path / "last.pt").write_bytes(b"")
    assert resume_point().path.name == "best.pt"
    (tmp_path / "best.pt").write_bytes(b"garbage")
    assert resume_point().path.name == "step-00000004.pt"
    (tmp_path / "step-00000004.pt").write_bytes(b"")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ckpt_io.CheckpointError, match="holds checkpoints and none of them loads: last.pt: empty"):
        resume_point()
    with pytest.raises(ckpt_io.CheckpointError):  # evaluating needs a checkpoint: restart does not apply
        resume_point("checkpoint.on_unreadable=restart", "eval.only=true")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    assert resume_point("checkpoint.on_unreadable=restart") is None
    (aside,) = tmp_path.glob("superseded-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before and list(tmp_path.iterdir()) == [aside]

    torch.save(at(6), tmp_path / "last.pt")  # a good checkpoint: resume=never starts over all the same
    assert resume_point("checkpoint.resume=never") is None
    assert len(list(tmp_path.glob("superseded-*"))) == 2 and not (tmp_path / "last.pt").exists()


def test_opening_the_run_directory_leaves_only_its_lock(tmp_path):
    from pipeline.config import load_config
    from pipeline.runs.rundir import LOCK_FILE, open_run_dir

    cfg = load_config(None, [f"logging.runs_dir={tmp_path}", "logging.run_name=x"])
    run = open_run_dir(cfg, is_main=True)  # one process: the shared-directory check passes trivially
    assert run.path == (tmp_path / "x").resolve() and run.created
    # No check file left behind, and no config.yaml yet: the trainer writes it once start-up succeeded.
    assert [p.name for p in run.path.iterdir()] == [LOCK_FILE]


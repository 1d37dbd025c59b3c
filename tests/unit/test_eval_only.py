"""pipeline/training/eval_only.py: where an evaluation's files go and what its split is called.
"""

from __future__ import annotations

from pipeline.config import load_config


def test_evaluation_folder_and_split_name(tmp_path, tiny_tree):
    """Inside the evaluated run's directory; a checkpoint outside any run gets a folder of its own in runs_dir.
    The split is the one the evaluation reads (data.eval_split=auto: the folder it found)."""
    import datetime

    from pipeline.data import load_image_sets
    from pipeline.training.eval_only import evaluation_folder, split_name

    when = datetime.datetime(2026, 12, 7, 11, 36, 6)
    run = tmp_path / "runs" / "qs-1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: qs\n")
    assert evaluation_folder(run / "best.pt", "test", str(tmp_path / "runs"), when) == (
        run / "eval" / "best-test-20261207-113606")
    (run / "eval" / "best-test-20261207-113606").mkdir(parents=True)  # a second evaluation within the second
    assert evaluation_folder(run / "best.pt", "test", "runs", when).name == "best-test-20261207-113606-2"
    assert evaluation_folder(tmp_path / "downloads" / "sq.pt", "val", str(tmp_path / "runs"), when) == (
        tmp_path / "runs" / "eval-sq-val-20261207-113606")
    cfg = load_config(None, ["data.source=imagefolder", f"data.root={tiny_tree}", "model.num_classes=3"])
    assert split_name(cfg.data, load_image_sets(cfg.data)[1]) == "val"
    assert split_name(load_config(None, []).data, None) == "test"  # the sample's test split


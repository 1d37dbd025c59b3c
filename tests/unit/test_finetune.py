"""pipeline/training/finetune.py: train.init_from's config checks, and a run saved before the fine-tuning keys.
"""

from __future__ import annotations

import pytest


def test_init_from_contradicting_other_keys_is_a_config_error():
    from pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.init_from: starts a new run .* give one of the two"):
        load_config(None, ["train.init_from=runs/a", "checkpoint.resume=runs/b/last.pt"])
    with pytest.raises(ConfigError, match=r"train.init_from: eval.only .* \(checkpoint.resume=runs/a\)"):
        load_config(None, ["train.init_from=runs/a", "eval.only=true"])
    assert load_config(None, ["train.init_from=runs/a", "train.freeze=features"]).train.freeze == "features"


def test_a_run_saved_before_the_fine_tuning_keys_existed_continues_unchanged():
    """Keys added to the schema later take their defaults in an older saved config: no change to refuse."""
    from pipeline.config import Config, load_config
    from pipeline.runs.changes import config_changes
    from pipeline.runs.continuation import setup_differences

    current = load_config(None, [])
    older = current.to_dict()
    for key in ("init_from", "init_weights", "freeze"):
        del older["train"][key]
    assert config_changes(older, current.to_dict()) == []
    assert setup_differences(__import__("pipeline.runs.changes", fromlist=["flatten"]).flatten(older), current) == []
    changed = load_config(None, ["train.freeze=features"]).to_dict()
    assert [c.key for c in config_changes(older, changed)] == ["train.freeze"]
    assert isinstance(Config(), Config)


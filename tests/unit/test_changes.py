"""pipeline/runs/changes.py: which config changes a continued run takes freely and which are a new experiment.
"""

from __future__ import annotations

from pipeline.runs.changes import config_changes


def test_changes_are_classified_free_or_experiment():
    saved = {"optim": {"lr": 0.1}, "logging": {"log_every": 50}, "data": {"num_threads": 2, "train": {"crop": 122}},
             "checkpoint": {"accept_changes": []}}
    current = {"optim": {"lr": 0.5}, "logging": {"log_every": 10}, "data": {"num_threads": 4, "train": {"crop": 96}},
               "checkpoint": {"accept_changes": ["optim.lr"]}}
    kinds = {c.key: c.kind for c in config_changes(saved, current)}
    assert kinds == {"optim.lr": "experiment", "logging.log_every": "free", "data.num_threads": "free",
                     "data.train.crop": "experiment"}  # the acceptance itself is not a change


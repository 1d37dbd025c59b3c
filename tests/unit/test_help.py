"""Every entry point answers --help with its usage and exit status 0 (launch.sh: tests/e2e/test_launch.py,
each `pipeline.bench` kind: tests/unit/test_bench_cli.py).

    pytest tests/unit/test_help.py
"""

from __future__ import annotations

import importlib
import runpy

import pytest

from runs import REPO


@pytest.mark.parametrize("module, usage", [
    ("pipeline.config", "usage: python -m pipeline.config"),
    ("pipeline.bench.__main__", "usage: python -m pipeline.bench"),
    ("pipeline.tools.compare", "usage: python -m pipeline.tools.compare"),
    ("pipeline.tools.sweep", "usage: python -m pipeline.tools.sweep"),
    ("pipeline.deploy.export", "usage: python -m pipeline.export"),
    ("pipeline.deploy.predict", "usage: python -m pipeline.predict"),
])
def test_python_m_entry_points_print_usage_and_exit_0(module, usage, capsys):
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_train_dist_help_prints_its_docstring_and_returns_0(capsys):
    train_dist = runpy.run_path(str(REPO / "train_dist.py"))  # not as __main__: nothing runs
    assert train_dist["main"](["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Train an image classifier") and "--resolve" in out and "Exit status" in out


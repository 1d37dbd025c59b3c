"""pipeline/entry.py: exit_now keeps the exit code, the exit handlers and buffered output.
"""

from __future__ import annotations

import subprocess
import sys

from runs import REPO, run_env


def test_exit_now_keeps_the_code_the_exit_handlers_and_buffered_output(tmp_path):
    """The entry points' fast exit skips module teardown, not what an exit must still do."""
    marker = tmp_path / "handler-ran"
    script = f"""
import atexit, logging, sys
from pipeline.entry import exit_now
atexit.register(lambda: open({str(marker)!r}, "w").write("yes"))
logging.basicConfig(stream=sys.stderr)
logging.getLogger("x").warning("logged line")
sys.stdout.write("buffered line without a newline")  # a pipe: block-buffered
exit_now(3)
"""
    env = {k: v for k, v in run_env().items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "buffered line without a newline"
    assert "logged line" in proc.stderr
    assert marker.read_text() == "yes"


"""Run the README's CPU commands as a newcomer would type them: the README's promise, checked by CI.

    python scripts/readme_check.py [--skip COMMAND ...] [--list]

Every fenced `bash` block of README.md that follows a `<!-- ci: run -->` line is run line by line,
in order, from the repository root, with bash (a line ending in a backslash continues on the
next). `--skip` leaves out commands CI has run already (`.ci/run` passes `scripts/test.sh`).
Blocks that need a GPU, several nodes or SLURM are marked `<!-- ci: not on a CPU -->` instead, and
templates with a placeholder `<!-- ci: not run: ... -->` saying where their runnable form is;
tests/unit/test_docs.py fails when a README block with a command is marked neither way, so a new
command cannot escape the check. Exit status: 0 when every command exited 0, else 1 (the failed
command and its output tail are printed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = "<!-- ci: run -->"
NOT_RUN = "<!-- ci: not "  # "<!-- ci: not on a CPU -->", "<!-- ci: not run: a template ... -->": said, not escaped


def blocks(text: str) -> list[tuple[str | None, list[str]]]:
    """(marker or None, command lines) of every fenced bash block, continuation lines joined."""
    found, marker, body, inside = [], None, [], False
    previous = ""
    for line in text.splitlines():
        if not inside and line.startswith("```bash"):
            inside, body = True, []
            marker = previous.strip() if previous.strip() == RUN or previous.strip().startswith(NOT_RUN) else None
        elif inside and line.startswith("```"):
            inside = False
            found.append((marker, join_continuations(body)))
        elif inside:
            body.append(line)
        if line.strip():
            previous = line
    return found


def join_continuations(lines: list[str]) -> list[str]:
    commands, current = [], ""
    for line in lines:
        stripped = line.strip()
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/readme_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", action="append", default=[], help="a command to leave out (as written)")
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    commands = [c for marker, cmds in blocks((REPO / "README.md").read_text()) if marker == RUN for c in cmds]
    skip = {s.strip() for s in args.skip}
    commands = [c for c in commands if re.sub(r"\s+#.*$", "", c).strip() not in skip]
    if args.list:
        print("\n".join(commands))
        return 0
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    for command in commands:
        t0 = time.monotonic()
        print(f"readme_check: $ {command}", flush=True)
        proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            print(f"readme_check: exit {proc.returncode} after {took:.0f} s\n--- stdout\n{proc.stdout[-3000:]}\n"
                  f"--- stderr\n{proc.stderr[-5000:]}", file=sys.stderr)
            return 1
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:160]
        print(f"readme_check: ok in {took:.0f} s  {tail}", flush=True)
    print(f"readme_check: all {len(commands)} README commands ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())

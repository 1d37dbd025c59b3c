"""README.md's results table, written from docs/figures.yaml: the one source of the figures it quotes.

    .venv/bin/python scripts/figures.py            # rewrite the table in README.md from docs/figures.yaml
    .venv/bin/python scripts/figures.py --check    # exit 1, saying so, when README.md's table differs

Each entry of docs/figures.yaml is one row: what was measured, the figure as quoted, the command, the
machine, the git revision and the date, and what a clone lacks to reproduce it. The table lies
between the `<!-- figures: begin -->` and `<!-- figures: end -->` lines of README.md.
tests/unit/test_docs.py runs the check, and checks docs/training.md's quickstart figures against the
same entry.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE, README = REPO / "docs" / "figures.yaml", REPO / "README.md"
BEGIN, END = "<!-- figures: begin -->", "<!-- figures: end -->"
FIELDS = ("id", "what", "figure", "command", "machine", "revision", "date", "needs")


def load(path: Path = SOURCE) -> dict[str, dict[str, Any]]:
    """{id: entry} in the file's order; every entry has every field."""
    entries = yaml.safe_load(path.read_text())
    for entry in entries:
        missing = [f for f in FIELDS if f not in entry]
        if missing:
            raise SystemExit(f"{path}: entry {entry.get('id', '?')!r} lacks {', '.join(missing)}")
    return {str(e["id"]): e for e in entries}


def how(entry: dict[str, Any]) -> str:
    """The row's 'how it was measured' cell: command; machine, revision, date."""
    where = [str(entry[k]) for k in ("machine",) if entry[k] not in ("", "-")]
    where += [f"git {entry['revision']}"] if entry["revision"] else []
    where += [str(entry["date"])] if entry["date"] not in ("", "-") else []
    return f"{entry['command']}" + (f"; {', '.join(where)}" if where else "")


def table(entries: dict[str, dict[str, Any]]) -> str:
    rows = ["| what | figure | how it was measured | a clone needs |", "| --- | --- | --- | --- |"]
    rows += [f"| {e['what']} | {e['figure']} | {how(e)} | {e['needs']} |" for e in entries.values()]
    return "\n".join(rows)


def with_table(readme: str, rendered: str) -> str:
    head, begin, rest = readme.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"{README}: no {BEGIN} ... {END} lines around the results table")
    return f"{head}{begin}{rendered}\n{end}{tail}"


def main(argv: list[str]) -> int:
    readme = README.read_text()
    wanted = with_table(readme, table(load()))
    if argv == ["--check"]:
        if wanted != readme:
            print(f"{README.name}: the results table differs from {SOURCE.relative_to(REPO)}; "
                  f"run .venv/bin/python scripts/figures.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__)
        return 0 if argv[0] in ("-h", "--help") else 2
    README.write_text(wanted)
    print(f"wrote the results table of {README.name} from {SOURCE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

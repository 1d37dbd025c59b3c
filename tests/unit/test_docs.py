"""The documentation against the repository: README.md, BENCHMARKS.md and docs/*.md.

- every relative link leads to a file that exists (and a #fragment to a heading of it);
- every repository path they name in code (`configs/x.yaml`, `pipeline/bench/loader.py`) exists,
  and so does every Markdown file they name;
- nothing outside the repository (`../shared/...`, which a clone does not have) is named;
- every command they show for train_dist.py, launch.sh, slurm.sbatch, pipeline.config,
  pipeline.bench or pipeline.tools.sweep has a config file and `key=value` overrides the schema
  accepts (load_config, as the command would);
- their tables are well formed: one header, one separator, the same number of cells in every row;
- docs/configuration.md is what `python -m pipeline.config --docs` writes from the schema.

    pytest tests/unit/test_docs.py
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import ConfigError, configuration_page, load_config
from pipeline.constants import REPO_ROOT as REPO

DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]


IDS = [str(p.relative_to(REPO)) for p in DOCS]


# Paths a command creates rather than the repository holds (data.download=true fetches into data/cifar10).
CREATED = {"data/cifar10"}


REPO_PATH = re.compile(r"(?<![\w./-])(?:\./)?((?:configs|scripts|pipeline|models|tests|bench|docs|data|\.ci)/"
                       r"[\w.\-/]*|launch\.sh|train_dist\.py|pyproject\.toml)")


MARKDOWN_FILE = re.compile(r"(?<![\w./-])([\w-]+\.md)\b")


OUTSIDE = re.compile(r"(?<![\w.])\.\./[\w.\-/]+")  # `../` alone is a value (a run name that escapes)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


ENTRY_POINTS = ("train_dist.py", "launch.sh", "slurm.sbatch", "pipeline.config", "pipeline.bench",
                "pipeline.tools.sweep")


OVERRIDE = re.compile(r"^[a-z_]+(\.[a-z_]+)*=")


# Options of the entry points that take the next word as their value.
VALUE_OPTIONS = {"--steps", "--warmup", "--repeats", "--out", "--backends", "--models", "--precisions", "--formats",
                 "--compile", "--batch-sizes", "--size", "--nproc", "--feeds", "--grid", "--name", "--docs"}


@dataclass
class Fence:
    line: int      # 1-based line of the opening ```
    lang: str
    body: list[str]


def fences(text: str) -> list[Fence]:
    found, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if current is None:
                current = Fence(number, line.strip().strip("`").strip(), [])
            else:
                found.append(current)
                current = None
        elif current is not None:
            current.body.append(line)
    return found


def prose(text: str) -> str:
    """The text with its fenced blocks blanked (line numbers kept)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(text))


def named_in_code(text: str) -> list[str]:
    """Everything the doc shows as code: inline spans, fenced blocks, link targets."""
    return code_spans(text) + ["\n".join(f.body) for f in fences(text)] + LINK.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(path.read_text()).splitlines() if re.match(r"#{1,6} ", line)}


def commands(text: str) -> list[tuple[int, list[str]]]:
    """(line, words) of every command in a fenced block that runs one of the entry points."""
    found = []
    for fence in fences(text):
        joined, start = "", 0
        for offset, line in enumerate(fence.body):
            if not joined:
                start = fence.line + 1 + offset
            joined += line.rstrip().removesuffix("\\") + " "
            if line.rstrip().endswith("\\"):
                continue
            command, joined = joined.strip().removeprefix("$ "), ""
            try:
                lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
                lexer.whitespace_split, lexer.commenters = True, "#"
                words = list(lexer)
            except ValueError:  # not shell (a table of output): nothing to check
                continue
            segment: list[str] = []
            for word in [*words, ";"]:
                if word in (";", "&&", "||", "|", "&"):
                    if any(w.endswith(ENTRY_POINTS) for w in segment):
                        found.append((start, segment))
                    segment = []
                else:
                    segment.append(word)
    return found


def config_and_overrides(words: list[str]) -> tuple[str | None, list[str]]:
    """The config file and the `key=value` overrides of one command (env assignments and options aside)."""
    entry = next(i for i, w in enumerate(words) if w.endswith(ENTRY_POINTS))
    config, overrides, skip = None, [], False
    for word in words[entry + 1:]:
        if skip:
            skip = False
            if words[entry].endswith("pipeline.tools.sweep") and OVERRIDE.match(word):  # --grid key=v1,v2
                overrides.append(word.split(",")[0])
            continue
        if word.startswith("-"):
            skip = word in VALUE_OPTIONS
        elif OVERRIDE.match(word):
            overrides.append(word)
        elif word.endswith(".yaml") and config is None and not word.startswith("["):
            config = word
    return config, overrides


def table_problems(text: str) -> list[str]:
    problems, table = [], []
    lines = prose(text).splitlines() + [""]
    for number, line in enumerate(lines, 1):
        if line.startswith("|"):
            table.append((number, line))
            continue
        if table:
            cells = [len(re.findall(r"(?<!\\)\|", row)) - 1 for _, row in table]
            separators = [n for n, row in table if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", row.strip())]
            if separators != ([table[1][0]] if len(table) > 1 else []):  # the rule under the header, only
                problems.append(f"table at line {table[0][0]}: separator rows at {separators}, expected only the "
                                "second")
            for (n, _), count in zip(table, cells):
                if count != cells[0]:
                    problems.append(f"line {n}: {count} cells, the header has {cells[0]} (an unescaped | ?)")
            table = []
    return problems


def _readme_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_check", REPO / "scripts" / "readme_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_relative_links_lead_to_files_and_headings_that_exist(doc):
    text, broken = doc.read_text(), []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
        elif REPO not in (file, *file.parents):
            broken.append(f"{target}: outside the repository")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_named_repository_paths_exist_and_nothing_outside_is_named(doc):
    text, missing = doc.read_text(), []
    for code in named_in_code(text):
        for outside in OUTSIDE.findall(code):
            target = (doc.parent / outside.rstrip(".,:;")).resolve()  # docs/ linking up to the root's files
            if not (target.is_relative_to(REPO.resolve()) and target.exists()):
                missing.append(f"{outside}: outside the repository (a clone does not have it)")
        for path in REPO_PATH.findall(code):
            path = path.rstrip(".,:;")
            if path not in CREATED and not (REPO / path).exists():
                missing.append(f"{path}: not in the repository")
    for name in set(MARKDOWN_FILE.findall(text)):
        if not any((folder / name).is_file() for folder in (REPO, REPO / "docs", doc.parent)):
            missing.append(f"{name}: no such file in the repository")
    assert not missing, f"{doc.name}: " + "; ".join(sorted(set(missing)))


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_every_command_shown_is_accepted_by_the_schema(doc):
    rejected = []
    shown = commands(doc.read_text())
    assert shown or doc.parent.name == "docs" and doc.name != "configuration.md", "no command found: the parser broke"
    for line, words in shown:
        config, overrides = config_and_overrides(words)
        if config == "configs/sweep.yaml":
            continue  # a W&B sweep specification, not a run config
        try:
            load_config(REPO / config if config else None, overrides)
        except ConfigError as exc:
            rejected.append(f"line {line}: {shlex.join(words)}: {exc}")
    assert not rejected, f"{doc.name}: " + "\n".join(rejected)


def test_the_command_parser_finds_commands_and_their_overrides():
    text = ("```bash\nNPROC=2 ./launch.sh configs/quickstart.yaml optim.lr=0.2 \\\n    train.epochs=3   # note\n"
            "python -m pipeline.bench loader --steps 10 data.source=sample --stages && echo done\n"
            "python -m pipeline.tools.sweep configs/quickstart.yaml --grid optim.lr=0.05,0.1 --name qs\n```\n"
            "```\nbackend  source\ndali-cpu  sample  1.5x\n```\n")
    found = [(line, config_and_overrides(words)) for line, words in commands(text)]
    assert found == [(2, ("configs/quickstart.yaml", ["optim.lr=0.2", "train.epochs=3"])),
                     (4, (None, ["data.source=sample"])),
                     (5, ("configs/quickstart.yaml", ["optim.lr=0.05"]))]


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_tables_are_well_formed(doc):
    problems = table_problems(doc.read_text())
    assert not problems, f"{doc.name}: " + "; ".join(problems)


def test_table_check_finds_a_stray_separator_and_an_unescaped_pipe():
    good = "| a | b |\n| --- | --- |\n| `x\\|y` | 2 |\n"
    assert table_problems(good) == []
    assert table_problems(good + "| --- | --- |\n| 3 | 4 |\n") == [
        "table at line 1: separator rows at [2, 4], expected only the second"]
    assert table_problems("| a | b |\n| --- | --- |\n| `x|y` | 2 |\n") == [
        "line 3: 3 cells, the header has 2 (an unescaped | ?)"]


def test_readme_figures_come_from_their_one_source():
    """README.md's results table is written from docs/figures.yaml (scripts/figures.py); every entry
    says how, on what and when it was measured; docs/training.md quotes the quickstart's figures as
    the same entry gives them, not a figure of its own."""
    import runpy

    figures = runpy.run_path(str(REPO / "scripts" / "figures.py"))
    assert figures["main"](["--check"]) == 0, "README.md's results table differs from docs/figures.yaml"
    entries = figures["load"]()
    for entry in entries.values():
        measured = not entry["figure"].startswith("not measured")
        assert entry["command"] and (not measured or entry["machine"]), entry["id"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(entry["date"])) or not measured, entry["id"]
    quickstart = entries["quickstart"]
    row = next(line for line in (REPO / "docs" / "training.md").read_text().splitlines()
               if line.startswith("| `configs/quickstart.yaml`"))
    quoted = re.findall(r"\d[\d,.]*%|\d+ min \d+ s", row)
    assert quoted and all(q in quickstart["figure"] for q in quoted), (quoted, quickstart["figure"])
    assert set(re.findall(r"\d{4}-\d{2}-\d{2}", row)) <= {str(quickstart["date"])}


def test_configuration_reference_page_is_up_to_date():
    page = REPO / "docs" / "configuration.md"
    assert page.is_file() and page.read_text() == configuration_page(), (
        "docs/configuration.md is out of date: regenerate it with `python -m pipeline.config --docs`")


def test_every_model_the_schema_offers_is_described_once_in_the_training_guide():
    """docs/training.md's model table names exactly the schema's model.name values (the configuration page is
    generated from the schema, and `bench model --help` reads it there)."""
    from pipeline.config import MODEL_NAMES

    text = (REPO / "docs" / "training.md").read_text()
    table = text.split("| `model.name` | what |", 1)[1].split("\n\n", 1)[0]
    described = re.findall(r"`(\w+)`", "".join(line.split(" | ")[0] for line in table.splitlines()[2:]))
    assert sorted(described) == sorted(MODEL_NAMES)
    reference = configuration_page().split("| `model.name` |", 1)[1].splitlines()[0]
    assert all(name in reference for name in MODEL_NAMES)


def test_every_readme_command_block_is_run_by_ci_or_marked_as_not_for_a_cpu():
    """CI runs the README's CPU commands (scripts/readme_check.py); a block marked neither way would escape it."""
    check = _readme_check()
    found = check.blocks((REPO / "README.md").read_text())
    unmarked = [cmds for marker, cmds in found if cmds and marker is None]
    assert not unmarked, f"README bash blocks without a ci marker: {unmarked}"
    run = [c for marker, cmds in found if marker == check.RUN for c in cmds]
    assert any(c.startswith("./launch.sh") for c in run), "the quickstart must be among the commands CI runs"
    for command in run:  # each is valid bash
        assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0, command


def test_the_readme_runner_joins_continued_lines_and_drops_comments():
    check = _readme_check()
    text = "<!-- ci: run -->\n```bash\n# a comment\n./launch.sh a=1 \\\n    b=2   # why\nls\n```\n"
    assert check.blocks(text) == [(check.RUN, ["./launch.sh a=1 b=2   # why", "ls"])]


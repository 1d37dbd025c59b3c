"""Bad configuration, tried in bulk: random overrides and YAML files drawn from the schema itself.

Every case ends in a valid config (whose saved config.yaml loads back to the same config) or one
ConfigError line naming the key or file; never another exception. Through the public loader in-process
(thousands of cases in seconds), then a few through `python -m pipeline.config` and
`train_dist.py --resolve` as a user runs them (exit 0, or exit 2 with one line and no traceback).
Cases per CI run: see each `@cases(n)`; tests/fuzz.py says how to explore further.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from conftest import REPO, write_imagefolder
from fuzz import ODD_YAML, Scratch, assert_one_line, cases, render
from hypothesis import event, example, given
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, UserError
from runs import run_env


def schema_leaves(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, Any]:
    """{dotted key: field info} of every leaf of the schema, walked from the Config model."""
    leaves: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            leaves |= schema_leaves(info.annotation, f"{prefix}{name}.")
        else:
            leaves[prefix + name] = info
    return leaves


LEAVES = schema_leaves()


SECTIONS = sorted({key.rsplit(".", 1)[0] for key in LEAVES if "." in key})


KEY_NAMES = tuple(LEAVES) + tuple(SECTIONS)


def bounds(info: Any) -> list[float]:
    """The field's numeric bounds (gt, ge, lt, le), where values change from valid to invalid."""
    return [getattr(m, attr) for m in info.metadata for attr in ("gt", "ge", "lt", "le")
            if getattr(m, attr, None) is not None]


def typed_values(annotation: Any, info: Any) -> st.SearchStrategy[Any]:
    """Python values of the field's own type, near its bounds and far past them."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return st.one_of(*(typed_values(a, info) for a in args))
    if origin is typing.Annotated:
        return typed_values(args[0], info)
    if origin is list:
        return st.lists(typed_values(args[0], info), max_size=4)
    edges = [b + d for b in bounds(info) for d in (-1, -1e-9, 0, 1e-9, 1)]
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.one_of(st.integers(-3, 300), st.sampled_from([int(e) for e in edges] or [0]),
                         st.integers(-(2**70), 2**70))
    if annotation is float:
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(edges or [0.0]),
                         st.floats(-2, 2))
    return st.one_of(st.text(max_size=12), st.sampled_from(["auto", "off", "none", "/tmp", "a/b", ".", "..", "~x"]))


def yaml_quoted(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def value_texts(info: Any | None) -> st.SearchStrategy[str]:
    """The text after `key=`: a value of the key's type typed bare or YAML-quoted, an odd YAML token, any text."""
    choices = [st.sampled_from(ODD_YAML), st.text(max_size=16)]
    if info is not None:
        typed = typed_values(info.annotation, info)
        choices += [typed.map(render), typed.map(render), typed.map(yaml_quoted)]
    return st.one_of(*choices)


VALUE_TEXTS = {key: value_texts(info) for key, info in LEAVES.items()}  # built once: drawing is then cheap


ANY_TEXT = value_texts(None)


def value_text(key: str) -> st.SearchStrategy[str]:
    return VALUE_TEXTS.get(key, ANY_TEXT)


@st.composite
def near_miss(draw: st.DrawFn, key: str) -> str:
    """A key with one typing slip: a letter dropped, doubled or swapped, a case change, another separator."""
    at = draw(st.integers(0, len(key) - 1))
    slip = draw(st.sampled_from(("drop", "double", "swap", "upper", "separator", "space")))
    if slip == "drop":
        return key[:at] + key[at + 1:]
    if slip == "double":
        return key[:at] + key[at] + key[at:]
    if slip == "swap" and at + 1 < len(key):
        return key[:at] + key[at + 1] + key[at] + key[at + 2:]
    if slip == "upper":
        return key[:at] + key[at:].upper()
    if slip == "separator":
        return key.replace(".", draw(st.sampled_from(["_", "-", "..", "/", ":"])), 1)
    return key + draw(st.sampled_from([" ", ".", "_"]))


@st.composite
def override(draw: st.DrawFn) -> str:
    """One command-line override: mostly a real key with a good or bad value; sometimes a slipped key, a
    section given a scalar, a key one level too deep, a malformed item."""
    key = draw(st.sampled_from(tuple(LEAVES)))
    shape = draw(st.sampled_from(("leaf",) * 6 + ("near", "section", "deeper", "malformed", "random")))
    if shape == "near":
        key = draw(near_miss(key))
    elif shape == "section":
        key = draw(st.sampled_from(SECTIONS))
    elif shape == "deeper":
        key = f"{key}.{draw(st.sampled_from(['x', 'lr', '0', 'train']))}"
    elif shape == "malformed":
        return draw(st.sampled_from(["", "=", "=1", ".=1", "optim.=1", ".lr=1", "optim..lr=1", "optim.lr",
                                     "optim.lr==1", " = ", "train.epochs=1=2"]))
    elif shape == "random":
        key = draw(st.text(alphabet="abcdeilmnoprstuy._-0", min_size=1, max_size=14))
    return f"{key}={draw(value_text(key))}"


def given_keys(overrides: list[str]) -> list[str]:
    """The keys as typed, and their sections: an error names one of them, a schema key, or the override."""
    keys = [item.partition("=")[0].strip() for item in overrides]
    return [k for k in keys if k] + [k.rsplit(".", 1)[0] for k in keys if "." in k] + list(KEY_NAMES) + ["override "]


SAVED = Scratch("fuzz-config-").root


def assert_saved_config_loads_back(cfg: Config) -> None:
    """What a run saves as config.yaml is the same config."""
    path = SAVED / "config.yaml"
    path.write_text(cfg.to_yaml())  # save_config's text (its atomic write is tests/unit/test_files.py's)
    assert load_config(path) == cfg


@st.composite
def yaml_document(draw: st.DrawFn) -> str | bytes:
    """A config file: schema sections with good or odd values written as text, a dumped mapping of
    odd Python values, a non-mapping document, or bytes that are no text at all."""
    kind = draw(st.sampled_from(("sections", "sections", "dumped", "text", "bytes")))
    if kind == "sections":
        lines = []
        for key in draw(st.lists(st.sampled_from(tuple(LEAVES)), min_size=1, max_size=5, unique=True)):
            section, _, field = key.rpartition(".")
            value = draw(value_text(key)).replace("\n", " ")
            if section:
                for depth, part in enumerate(section.split(".")):
                    lines.append("  " * depth + f"{part}:")
                lines.append("  " * (section.count(".") + 1) + f"{field}: {value}")
            else:
                lines.append(f"{field}: {value}")
        return "\n".join(lines) + "\n"
    if kind == "dumped":
        plain = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
        values = st.recursive(plain, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["lr", "epochs", "train", "crop", "x"]), inner, max_size=3), max_leaves=8)
        doc = draw(st.dictionaries(st.sampled_from(SECTIONS + ["name", "optim", "train"]), values, max_size=3))
        return yaml.safe_dump(doc)
    if kind == "text":
        return draw(st.text(max_size=80))
    return draw(st.binary(max_size=80))


PYTHON = [sys.executable]


def printable(overrides: list[str]) -> bool:
    """What a shell can pass as arguments: no NUL, encodable text."""
    return all("\x00" not in item and item.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == item
               for item in overrides)


def assert_exit_0_or_one_line_and_2(proc: subprocess.CompletedProcess, prefix: str) -> None:
    assert proc.returncode in (0, 2), (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if proc.returncode == 2:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith(prefix), proc.stderr[-3000:]


# --resolve lists the data: the sources, each on a tiny set or a bad root (never the network: no download).
RESOLVE = Scratch("fuzz-resolve-").root


ROOTS = {"tree": str(RESOLVE / "tree"), "bad-tree": str(RESOLVE / "bad-tree"),
         "file": str(RESOLVE / "not-an-archive.tar"), "missing": str(RESOLVE / "missing"), "empty": ""}


@pytest.fixture(scope="module")
def data_roots() -> dict[str, str]:
    write_imagefolder(Path(ROOTS["tree"]), {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    (Path(ROOTS["bad-tree"]) / "train" / "a").mkdir(parents=True)
    (Path(ROOTS["bad-tree"]) / "train" / "a" / "x.jpg").write_bytes(b"no image")
    Path(ROOTS["file"]).write_bytes(b"\x00" * 700)
    return ROOTS


def resolve_overrides() -> st.SearchStrategy[list[str]]:
    source = st.sampled_from(["imagefolder", "webdataset", "cifar10", "synthetic", "sample"])
    data = st.builds(lambda s, r, auto: [f"data.source={s}", f"data.root={ROOTS[r]}"] + (
        ["model.num_classes=auto"] if auto else []), source, st.sampled_from(sorted(ROOTS)), st.booleans())
    return st.builds(lambda d, more: d + more + ["data.download=false", "data.cache=off"], data,
                     st.lists(override(), max_size=2))


@cases(600)
@given(st.lists(override(), min_size=1, max_size=4))
@example(["name=2026-13-45"])  # found: YAML reads it as a date, and a date that is none raised ValueError
@example(["name=2026-12-07T25:61:00"])  # found: the same for a time
@example(["train.nesterov=!!bool maybe"])  # the same class, by hand: KeyError, AttributeError, RecursionError
@example(["name=!!timestamp x"])
@example(["train.tta_thresholds=" + "[" * 2000])
def test_any_overrides_give_a_valid_config_or_one_line_naming_the_key(overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError as exc:
        event("refused")
        assert_one_line(str(exc), given_keys(overrides))
        return
    event("valid")
    assert_saved_config_loads_back(cfg)


@cases(200)
@given(yaml_document())
@example(b"\x80")  # found: UnicodeDecodeError
def test_any_config_file_gives_a_valid_config_or_one_line_naming_the_key_or_file(document):
    path = SAVED / "fuzzed.yaml"
    path.write_bytes(document if isinstance(document, bytes) else document.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        event("refused")
        assert_one_line(str(exc), [str(path), *KEY_NAMES])
        return
    event("valid")
    assert_saved_config_loads_back(cfg)


def test_every_choice_and_default_typed_bare_is_taken_as_that_value():
    """`key=value` as the reference documents the values (docs/configuration.md: `off`, `auto`, numbers)
    means that value: no type error for the key."""
    wrong = []
    for key, info in LEAVES.items():
        literal = [a for a in typing.get_args(info.annotation) if isinstance(a, str)] \
            if typing.get_origin(info.annotation) is Literal else []
        default = info.get_default(call_default_factory=True)
        for value in {*literal, *([render(default)] if not isinstance(default, (list, dict)) else [])}:
            try:
                load_config(None, [f"{key}={value}"])
            except ConfigError as exc:
                if str(exc).startswith(f"{key}: Input should be"):
                    wrong.append(str(exc))
    assert not wrong, "\n".join(wrong)


@cases(2)
@given(st.lists(override(), min_size=1, max_size=3).filter(printable))
@example(["train.epochs=2", "schedule.milestones=[1]"])  # valid: exit 0, the config on stdout
def test_python_m_pipeline_config_exits_0_or_2_with_one_line(overrides):
    proc = subprocess.run([*PYTHON, "-m", "pipeline.config", *overrides], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=run_env())
    assert_exit_0_or_one_line_and_2(proc, "config error: ")
    if proc.returncode == 0:
        assert isinstance(yaml.safe_load(proc.stdout), dict)
    else:
        assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


@cases(60)
@given(resolve_overrides())
@example(["data.source=imagefolder", "data.root=~0", "model.num_classes=auto"])  # found (explore): RuntimeError
def test_resolve_in_process_gives_the_resolved_config_or_one_line(data_roots, overrides):
    from pipeline.training.resolve import resolved_yaml

    try:
        cfg = load_config(None, overrides)
    except ConfigError as exc:
        event("refused: config")
        assert_one_line(str(exc), given_keys(overrides))
        return
    try:
        text = resolved_yaml(cfg)
    except UserError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_one_line(str(exc), given_keys(overrides) + [r for r in data_roots.values() if r])
        return
    event("resolved")
    assert isinstance(yaml.safe_load(text), dict)


@cases(1)
@given(resolve_overrides().filter(printable))
def test_train_dist_resolve_exits_0_or_2_with_one_line(data_roots, overrides):
    proc = subprocess.run([*PYTHON, "train_dist.py", *overrides, "--resolve"], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env=run_env())
    assert_exit_0_or_one_line_and_2(proc, "")
    if proc.returncode == 2:
        assert proc.stderr.strip().splitlines()[-1].split(":", 1)[0] in ("config error", "error"), proc.stderr


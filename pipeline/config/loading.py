"""Loading: defaults <- YAML file <- `key.sub=value` overrides, validated as one.

    cfg = load_config("configs/quickstart.yaml", ["train.epochs=5"])   # ConfigError naming any bad key
    cfg = config_from_cli(sys.argv[1:])                                 # entry points: None after a one-line error
    save_config(cfg, run_dir / "config.yaml")

Overrides are parsed as YAML scalars and merged over the file; keys of earlier versions are rewritten
to their replacements before validation (`_migrate_legacy_keys`), so old configs keep working.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.checks import check_consistency, format_errors
from pipeline.config.schema import SOURCE_KEYS, Config
from pipeline.constants import REPO_ROOT
from pipeline.errors import ConfigError
from pipeline.files import atomic_write_text
from pipeline.sources import DATA_KEYS


# What yaml.safe_load raises on bad input: its own errors, and its constructors' on a scalar that matches a
# type's pattern but is no such value (a date 2026-13-45, `!!int abc`, `!!bool maybe`), or on deep nesting.
YAML_ERRORS = (yaml.YAMLError, ValueError, KeyError, AttributeError, RecursionError)


def yaml_reason(exc: BaseException) -> str:
    """A YAML error in one line: PyYAML's (with its position) or the constructor's complaint."""
    reason = " ".join(str(exc).split())
    return reason if isinstance(exc, yaml.YAMLError) else f"{type(exc).__name__}: {reason}"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=0.2", "schedule.milestones=[10,20]"]` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value (e.g. train.epochs=5)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except YAML_ERRORS as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r} as YAML ({yaml_reason(exc)}; quote "
                              "the value, or write lists as [a,b])") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: '{part}' is both a value and a section in the overrides")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _migrate_legacy_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier versions, rewritten to their replacements (configs and overrides keep working)."""
    section = values.get("eval")
    if not (isinstance(section, dict) and "use_ema" in section):
        return values
    section = dict(section)
    use_ema = section.pop("use_ema")
    if not isinstance(use_ema, bool):
        raise ConfigError(f"eval.use_ema: expected true or false (got {use_ema!r}); it is now eval.weights: ema | raw | both")
    if "weights" in section:
        raise ConfigError("eval.use_ema: replaced by eval.weights; give only eval.weights")
    section["weights"] = "ema" if use_ema else "raw"
    return {**values, "eval": section}


def from_dict(values: dict[str, Any]) -> Config:
    """Validate plain data against the schema; raise ConfigError naming every bad key."""
    values = _migrate_legacy_keys(values)
    try:
        cfg = Config.model_validate(values)
    except ValidationError as exc:
        lines = format_errors(exc.errors(), Config)
        raise ConfigError("; ".join(lines)) from None
    check_consistency(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key=value` overrides, validated as one; the name defaults to the file stem."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            shipped = ", ".join(str(p.relative_to(REPO_ROOT)) for p in sorted((REPO_ROOT / "configs").glob("*.yaml"))
                                if p.name != "sweep.yaml")
            raise ConfigError(f"config file {path}: not found (the shipped ones: {shipped})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: cannot read it as UTF-8 text ({exc})") from None
        try:
            loaded = yaml.safe_load(text)
        except YAML_ERRORS as exc:
            raise ConfigError(f"config file {path}: invalid YAML: {yaml_reason(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
        values = loaded or {}
    cli = parse_overrides(overrides or [])
    values = _merge(_drop_unread_data_keys(values, cli, path), cli)
    if not values.get("name"):
        values["name"] = path.stem if path is not None else "default"
    return from_dict(values)


def _drop_unread_data_keys(values: dict[str, Any], cli: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """A data.source given on the command line over a YAML that selects other data is a choice, not the
    trap of a forgotten data.source (`configs/x.yaml data.source=sample` where x.yaml sets data.root):
    the YAML's data keys that source does not read are left out, with a warning, so the run's
    config.yaml says what was read."""
    cli_data, yaml_data = cli.get("data"), values.get("data")
    if not (isinstance(cli_data, dict) and isinstance(yaml_data, dict) and isinstance(cli_data.get("source"), str)):
        return values
    source = cli_data["source"]
    unread = [k for k in DATA_KEYS if k in yaml_data and k not in cli_data and source not in SOURCE_KEYS[k]]
    for key in unread:
        logging.getLogger(__name__).warning("data.%s: %r from %s is not read by data.source=%s: left out", key,
                                            yaml_data[key], path, source)
    return {**values, "data": {k: v for k, v in yaml_data.items() if k not in unread}}


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """Command-line words `[CONFIG.yaml] [key=value ...]` -> (the config path or None, the overrides)."""
    if args and "=" not in args[0]:
        return args[0], list(args[1:])
    return None, list(args)


def load_config_args(args: list[str]) -> Config:
    """The config an entry point's arguments describe (`[CONFIG.yaml] [key=value ...]`)."""
    return load_config(*split_args(args))


def config_from_cli(args: list[str]) -> Config | None:
    """For entry points: the config `[CONFIG.yaml] [key=value ...]` describes, or None after
    printing the one-line error (the caller exits with status 2)."""
    try:
        return load_config_args(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, cfg.to_yaml())

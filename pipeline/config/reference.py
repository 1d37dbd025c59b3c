"""The configuration reference, generated from the schema: docs/configuration.md and the Markdown table.

    python -m pipeline.config --docs         # rewrite docs/configuration.md (tests/unit/test_docs.py checks it is current)
    python -m pipeline.config --markdown     # the table of every key alone

One row per leaf key: its dotted name, type (with bounds), default and the field's one-line meaning.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel

from pipeline.config.schema import SOURCE_KEYS, Config, leaf_fields
from pipeline.constants import REPO_ROOT


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        bounds = ", ".join(b for b in (_bounds(m) for m in meta if hasattr(m, "metadata")) if b)
        return _type_name(base) + (f" ({bounds})" if bounds else "")
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: Any) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for meta in info.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _reference_row(key: str, info: Any) -> str:
    default = info.get_default(call_default_factory=True)
    kind = _type_name(info.annotation)
    bounds = _bounds(info)
    if bounds:
        kind += f" ({bounds})"
    shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
    cells = [f"`{key}`", kind, f"`{shown}`", info.description or ""]
    return "| " + " | ".join(c.replace("|", "\\|") if i else c for i, c in enumerate(cells)) + " |"


def _reference_rows(model: type[BaseModel], prefix: str) -> list[str]:
    """One table row per leaf key of `model`, nested sections flattened to dotted keys."""
    return [_reference_row(key, info) for key, info in leaf_fields(model, prefix)]


TABLE_HEADER = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]


def markdown_reference() -> str:
    """The configuration reference as one Markdown table, generated from the schema."""
    return "\n".join(TABLE_HEADER + _reference_rows(Config, "")) + "\n"


DOCS_PAGE = REPO_ROOT / "docs" / "configuration.md"

_PAGE_INTRO = """\
# Configuration reference

<!-- Generated from the schema in pipeline/config/schema.py by `python -m pipeline.config --docs`; edit the
schema, not this page (tests/unit/test_docs.py fails when the two differ). -->

Every entry point takes the same arguments: an optional YAML file, then `key.sub=value` overrides.

```bash
./launch.sh configs/quickstart.yaml train.epochs=5 optim.lr=0.2
python train_dist.py configs/quickstart.yaml data.source=imagefolder data.root=/data/my-images model.num_classes=auto
python -m pipeline.config configs/quickstart.yaml train.epochs=5      # print the validated config, run nothing
```

- **Precedence:** the defaults below, then the YAML file, then the overrides; the result is validated
  as one. The defaults are the reference recipe's settings (`configs/squeezenet_cifar10.yaml`) on the
  shipped sample.
- **Values are YAML:** `train.epochs=5`, `optim.lr=1e-2`, `train.compile=true`,
  `schedule.milestones=[10,20]`, `wandb.tags=[a,b]`; an empty value is an empty string (`data.root=`).
- **Mistakes stop the run before it starts**, with one line naming the key and a value to try, and exit
  status 2: an unknown key (`optim.lrr: unknown key (did you mean 'lr'?)`), a wrong type, a value out
  of range, `inf` or `nan` for any number (`optim.lr: Input should be a finite number (got 'inf')`), or
  keys that contradict each other (`schedule.milestones` past `train.epochs`).
- **`auto`** values are decided at start-up on the machine that trains (`train.precision: auto` is
  bf16 on CUDA, fp32 on CPU; `model.num_classes: auto` counts the class folders of the training
  data). `python train_dist.py CONFIG [key=value ...] --resolve` shows what they become on this machine
  without training. Every run saves its config, with `model.num_classes` resolved, as
  `runs/<run-name>/config.yaml`, and the other resolved values in `runs/<run-name>/resolved.json`.

## Keys that belong to one data source

Given for a `data.source` that does not read it, `data.root`, `data.train_split` or
`data.eval_split` stops the run before it starts when the source reads other images (`sample`,
`cifar10`): `data.root=/my/images` without `data.source=imagefolder` would otherwise train on the
shipped sample. Any other key of this table that the source does not read (or any of them with
`data.source=synthetic`, which replaces the data on purpose) is named in a warning in the run's
log: ignoring it changes nothing that trains.

"""


def configuration_page() -> str:
    """docs/configuration.md: how configuration works, which data keys each source reads, every key by section."""
    lines = [_PAGE_INTRO.rstrip("\n"), "", "| key | read by data.source |", "| --- | --- |"]
    lines += [f"| `data.{key}` | {', '.join(readers)} |" for key, readers in SOURCE_KEYS.items()]
    top = [_reference_row(name, info) for name, info in Config.model_fields.items()
           if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))]
    lines += ["", "## Top level", "", *TABLE_HEADER, *top]
    for name, info in Config.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            lines += ["", f"## `{name}`: {section.__doc__.strip().splitlines()[0]}", "", *TABLE_HEADER,
                      *_reference_rows(section, f"{name}.")]
    return "\n".join(lines) + "\n"


"""`python -m pipeline.config`: print the config that a YAML file and overrides describe, validated; or the reference.

    python -m pipeline.config configs/quickstart.yaml train.epochs=5   # print the validated config
    python -m pipeline.config --markdown                               # the reference table alone
    python -m pipeline.config --docs                                   # rewrite docs/configuration.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel

from pipeline.config.loading import config_from_cli
from pipeline.config.reference import DOCS_PAGE, configuration_page, markdown_reference
from pipeline.config.schema import SOURCE_KEYS, Config
from pipeline.constants import REPO_ROOT


def auto_keys(cfg: Config) -> dict[str, str]:
    """{dotted key: its description} for every value of `cfg` that is still `auto`."""
    found: dict[str, str] = {}

    def walk(section: BaseModel, prefix: str) -> None:
        for name, info in type(section).model_fields.items():
            value = getattr(section, name)
            if isinstance(value, BaseModel):
                walk(value, f"{prefix}{name}.")
            elif value == "auto":
                found[f"{prefix}{name}"] = info.description or ""
    walk(cfg, "")
    ignored = {f"data.{key}" for key, readers in SOURCE_KEYS.items() if cfg.data.source not in readers}
    return {key: doc for key, doc in found.items() if key not in ignored}


def validated_yaml(cfg: Config, resolved: bool = False) -> str:
    """The config as YAML, headed by comments that say what it is and which values are still `auto`."""
    head = ["# The validated config: defaults <- YAML file <- key=value overrides. Nothing ran."]
    autos = auto_keys(cfg)
    if autos:
        head.append("# `auto` values " + ("left, decided by each run:" if resolved
                                          else "are decided at start-up on the machine that trains:"))
        head += [f"#   {key}: {doc}" for key, doc in autos.items()]
        if not resolved:
            head.append("# To see what they become here (it lists the data): python train_dist.py ... --resolve")
    return "\n".join(head) + "\n" + cfg.to_yaml()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.config", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the config that CONFIG.yaml and key=value overrides describe, validated by the schema "
                    "(nothing runs). Values left at `auto` are decided at start-up, on the machine that trains; "
                    "`python train_dist.py CONFIG [key=value ...] --resolve` shows what they become here.",
        epilog="examples:\n"
               "  python -m pipeline.config configs/quickstart.yaml train.epochs=5\n"
               "  python -m pipeline.config --markdown        # the reference table alone\n"
               "  python -m pipeline.config --docs            # rewrite docs/configuration.md from the schema\n"
               "exit status: 0 valid, 2 a bad key or value (one line naming it)")
    parser.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key=value ...]",
                        help="an optional YAML file, then overrides such as optim.lr=0.2")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--markdown", action="store_true", help="print the reference of every key as a Markdown table")
    what.add_argument("--docs", nargs="?", const=str(DOCS_PAGE), metavar="PATH",
                      help=f"write the configuration reference page to PATH "
                           f"(default {DOCS_PAGE.relative_to(REPO_ROOT)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        sys.stdout.write(markdown_reference())
        return 0
    if args.docs:
        Path(args.docs).write_text(configuration_page())
        print(f"wrote {args.docs}", file=sys.stderr)
        return 0
    cfg = config_from_cli(args.args)
    if cfg is None:
        return 2
    sys.stdout.write(validated_yaml(cfg))
    return 0

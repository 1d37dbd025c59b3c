"""Which keys may change when a run continues, read from the schema, where each field declares it (`on_resume`).

    key_classes()   # {"optim.lr": OnResume.EXPERIMENT, "logging.log_every": OnResume.FREE, ...}: every leaf key
    FREE_KEYS       # ("name", "data.num_threads", ..., "logging.", ...): keys and whole sections (ending in ".")
                    # that change freely (pipeline/runs/changes.py)
    NAMING_KEYS     # keys that name the run (free; compare and continuation skip them)
    NOT_COMPARED_KEYS  # checkpoint.accept_changes: the acceptance itself
    MUST_MATCH      # ("model", "data.source", ...): keys and whole sections a continued run must keep, whatever
                    # checkpoint.accept_changes says (pipeline/training/checkpoint.py)

A key's class is its own declaration, else that of the nearest section that declares one, else
EXPERIMENT (schema.OnResume). A whole section is listed by its name, so a key it held in an earlier
version (in a saved config, not in the schema) keeps the section's class.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pipeline.config.schema import Config, OnResume, leaf_fields


def declared(info: Any) -> OnResume | None:
    """The class a field (a key or a section) declares, or None."""
    extra = info.json_schema_extra
    value = extra.get("on_resume") if isinstance(extra, dict) else None
    return OnResume(value) if value is not None else None


def declarations(section: type[BaseModel] = Config, prefix: str = "") -> dict[str, tuple[OnResume, bool]]:
    """{dotted key or section: (its declared class, whether it is a section)} for every field that declares one."""
    found: dict[str, tuple[OnResume, bool]] = {}
    for name, info in section.model_fields.items():
        ann = info.annotation
        nested = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        cls = declared(info)
        if cls is not None:
            found[prefix + name] = (cls, nested is not None)
        if nested is not None:
            found.update(declarations(nested, f"{prefix}{name}."))
    return found


def owners(key: str) -> list[str]:
    """`a.b.c` -> [`a.b.c`, `a.b`, `a`]: the key, then the sections holding it, nearest first."""
    parts = key.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def key_classes() -> dict[str, OnResume]:
    """Every leaf key of the schema, in schema order, with its class."""
    declared_here = declarations()
    return {key: next((declared_here[o][0] for o in owners(key) if o in declared_here), OnResume.EXPERIMENT)
            for key, _ in leaf_fields(Config)}


def _listed(classes: tuple[OnResume, ...], section_suffix: str) -> tuple[str, ...]:
    """The keys and sections declaring one of `classes`, a section as its name + `section_suffix`; a key inside a
    section listed for the same classes is covered by it and left out."""
    found = declarations()
    sections = {key for key, (cls, is_section) in found.items() if is_section and cls in classes}
    return tuple(key + (section_suffix if is_section else "") for key, (cls, is_section) in found.items()
                 if cls in classes and not any(o in sections for o in owners(key)[1:]))


FREE_KEYS = _listed((OnResume.FREE, OnResume.NAMING), ".")
NAMING_KEYS = frozenset(key for key, cls in key_classes().items() if cls is OnResume.NAMING)
NOT_COMPARED_KEYS = frozenset(key for key, cls in key_classes().items() if cls is OnResume.NOT_COMPARED)
MUST_MATCH = _listed((OnResume.MUST_MATCH,), "")

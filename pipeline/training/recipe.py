"""The recipe in force: the schedule and the augmentation and regularisation options a run trains with.

    values = recipe_in_force(cfg, total_steps, train_sides)   # {"resolved/schedule": "onecycle", ...}
    log.info("%s", describe_recipe(values))    # recipe: onecycle over 1,170 steps, ...; on: ...; off: ...

Most of these are config values; the run's start-up line gathers them with what the run made of
them (the schedule's length in steps, progressive resizing's sizes), saying what is on and what
is off, and resolved.json and W&B's config hold them (pipeline/training/components.py
`resolved_settings`), so a run's options are read in one place.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import Config


def recipe_in_force(cfg: Config, total_steps: int, sides: tuple[int, ...]) -> dict[str, Any]:
    """`resolved/*` values of the schedule and the options: 0 (or "off", a single size, False) where one is off."""
    aug, train = cfg.data.train, cfg.train
    automatic = {"none": "off", "trivial_augment": "trivial_augment",
                 "rand_augment": f"rand_augment (n={aug.rand_augment_n}, m={aug.rand_augment_m})",
                 "auto_augment": f"auto_augment ({aug.auto_augment_policy} policy)"}[aug.auto_augment]
    mixing = train.mix_prob > 0
    return {
        "resolved/schedule": cfg.schedule.name,
        "resolved/schedule_steps": total_steps,
        "resolved/warmup_epochs": cfg.schedule.warmup_epochs,
        "resolved/augmentation": aug.kind,
        "resolved/flip_prob": aug.flip_prob,
        "resolved/auto_augment": automatic,
        "resolved/random_erasing": aug.erase_prob,
        "resolved/mixup_alpha": train.mixup_alpha if mixing else 0.0,
        "resolved/cutmix_alpha": train.cutmix_alpha if mixing else 0.0,
        "resolved/train_sides": list(sides),
        "resolved/eval_flip": cfg.eval.tta == "flip",
        "resolved/ema_decay": train.ema_decay,
        "resolved/label_smoothing": train.label_smoothing,
    }


def describe_recipe(values: dict[str, Any]) -> str:
    """One line from recipe_in_force's values: the schedule, the augmentation, then every option on and off."""
    sides = values["resolved/train_sides"]
    warmup = values["resolved/warmup_epochs"]
    head = (f"recipe: {values['resolved/schedule']} schedule over {values['resolved/schedule_steps']:,} steps"
            f"{f' ({warmup:g} warm-up epochs)' if warmup else ''}; {values['resolved/augmentation']} augmentation at "
            f"{sides[-1]} px, flip {values['resolved/flip_prob']:g}")
    mixes = [f"{name} alpha {values[key]:g}" for name, key in (("mixup", "resolved/mixup_alpha"),
                                                               ("CutMix", "resolved/cutmix_alpha")) if values[key]]
    options = [  # (name when off, what it says when on, on?)
        ("automatic augmentation", f"automatic augmentation {values['resolved/auto_augment']}",
         values["resolved/auto_augment"] != "off"),
        ("random erasing", f"random erasing p {values['resolved/random_erasing']:g}",
         values["resolved/random_erasing"] > 0),
        ("mixup/CutMix", " + ".join(mixes), bool(mixes)),
        ("progressive resizing", f"progressive sizes {', '.join(map(str, sides))} px", len(sides) > 1),
        ("flip evaluation", "flip evaluation", values["resolved/eval_flip"]),
        ("EMA", f"EMA {values['resolved/ema_decay']:g}", values["resolved/ema_decay"] > 0),
        ("label smoothing", f"label smoothing {values['resolved/label_smoothing']:g}",
         values["resolved/label_smoothing"] > 0),
    ]
    on = [said for _, said, active in options if active]
    off = [name for name, _, active in options if not active]
    return f"{head}; on: {', '.join(on) or 'none'}; off: {', '.join(off) or 'none'}"

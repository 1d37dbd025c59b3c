"""A checkpoint's weights for a new use: fine-tuning (train.init_from), export and predict.

    path = find_checkpoint(Path("runs/quickstart-20261207-113701"))  # a run directory (best.pt, else last.pt) or a file
    source = read_weights(path, "ema")          # WeightsSource: the state dict, config, model card, sha256, recorded top-1
    model = source.build_model()                # the registry's network with those weights, loaded strictly, in eval mode

Continuing a run restores everything in its checkpoint (checkpoint.py); this reads only what a new
model needs. The state dict is the plain module's: the prefixes that wrapping adds when a state dict
is taken from the wrapper (`module.` of DDP and of the EMA's copy, `_orig_mod.` of torch.compile) are
removed, so a file written by another script loads as well as ours. Any problem is a CheckpointError
naming the file: not a file of this project, unreadable, of a model this version lacks, or weights that
do not fit the network their config names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from models import build_model, list_models
from pipeline.config import Config, from_dict
from pipeline.data.transform import EvalTransform
from pipeline.errors import CheckpointError, ConfigError
from pipeline.training.checkpoint import WEIGHTS_KEYS, load, model_card

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP (and WeightEMA's `module`), torch.compile


def find_checkpoint(path: Path) -> Path:
    """The checkpoint a path names: a .pt file itself, or a run directory's best.pt (its best evaluation),
    else its last.pt."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no checkpoint in this folder (expected best.pt or last.pt of a run)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def unwrapped(state: dict[str, Any]) -> dict[str, Any]:
    """The plain module's state dict: DDP's and torch.compile's prefixes removed, in any nesting."""
    state = dict(state)
    changed = True
    while changed:
        before = list(state)
        for prefix in WRAPPER_PREFIXES:
            if state and all(key.startswith(prefix) for key in state):
                consume_prefix_in_state_dict_if_present(state, prefix)
        changed = list(state) != before
    return state


@dataclass
class WeightsSource:
    """The weights of one checkpoint, with what a client needs besides them."""

    path: Path
    sha256: str
    config: dict[str, Any]  # the run's resolved config, as plain data
    state: dict[str, Any]  # the plain module's state dict
    weights: str  # "ema" or "raw": which set `state` is
    classes: list[str]
    transform: EvalTransform
    recorded: dict[str, float] = field(default_factory=dict)  # top1, top5, epoch, step of the evaluation on record
    notes: list[str] = field(default_factory=list)  # how the card was completed, which weights were taken

    @property
    def model_name(self) -> str:
        return self.config["model"]["name"]

    @property
    def num_classes(self) -> int:
        return int(self.config["model"]["num_classes"])

    def run_config(self) -> Config:
        """The run's config, validated by this version's schema (export reads its data and W&B settings)."""
        try:
            return from_dict(self.config)
        except ConfigError as exc:
            raise CheckpointError(f"{self.path}: its run's config is not valid here ({exc})") from None

    def build_model(self) -> nn.Module:
        """The registry's network with these weights (strict), in eval mode, fp32, on the CPU."""
        name = self.model_name
        if name not in list_models():
            raise CheckpointError(f"{self.path}: written for model {name!r}, which this version does not have "
                                  f"(it has {', '.join(list_models())})")
        model = build_model(name, num_classes=self.num_classes, dropout=self.config["model"].get("dropout", 0.5))
        try:
            model.load_state_dict(self.state, strict=True)
        except RuntimeError as exc:
            first = " ".join(str(exc).split("\n\t")[1:2]).strip() or str(exc).splitlines()[0]
            raise CheckpointError(f"{self.path}: its weights do not fit model.name={name} with {self.num_classes} "
                                  f"classes ({first[:300]})") from None
        return model.float().eval()


def headline_weights(config: dict[str, Any], has_ema: bool) -> str:
    """Which weights the run's val/* figures describe (eval.weights: ema or both = the EMA when there is one)."""
    return "ema" if has_ema and config.get("eval", {}).get("weights", "ema") != "raw" else "raw"


def recorded_result(ckpt: dict[str, Any], weights: str, headline: str) -> dict[str, float]:
    """The evaluation on record when the checkpoint was written, for `weights` ({} when none was made, or when
    what is recorded is not numbers)."""
    counters = ckpt.get("counters") if isinstance(ckpt.get("counters"), dict) else {}
    final = counters.get("final") if isinstance(counters.get("final"), dict) else {}
    prefix = "val/" if weights == headline else f"val_{weights}/"
    recorded = {"top1": final.get(f"{prefix}top1"), "top5": final.get(f"{prefix}top5", float("nan")),
                "epoch": final.get("epoch", -1), "step": counters.get("global_step", -1)}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in recorded.values()):
        return {}
    return recorded


def _is_state_dict(state: Any) -> bool:
    return isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def read_weights(path: Path, weights: str = "ema") -> WeightsSource:
    """The `weights` ("ema", or "raw") of checkpoint `path`; "ema" of a run without an EMA gives its raw ones."""
    ckpt = load(path, WEIGHTS_KEYS)
    config = ckpt.get("config")
    if not isinstance(config, dict) or "model" not in config or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a model checkpoint of this project (no model weights or config)")
    model = config["model"]
    if not (isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("num_classes"), int)
            and not isinstance(model["num_classes"], bool) and model["num_classes"] > 1
            and isinstance(model.get("dropout", 0.5), (int, float)) and not isinstance(model.get("dropout"), bool)):
        raise CheckpointError(f"{path}: its config's model section is not a network of this project (expected "
                              "model.name, a model.num_classes above 1 and model.dropout)")
    notes: list[str] = []
    has_ema = isinstance(ckpt.get("ema"), dict)
    if weights == "ema" and not has_ema:
        notes.append("no EMA in this checkpoint (train.ema_decay was 0): its raw weights")
        weights = "raw"
    if weights == "ema":
        state = {k: v for k, v in ckpt["ema"].items() if k != "n_averaged"}  # WeightEMA: module.* and a counter
    else:
        state = ckpt["model"]
    if not _is_state_dict(state):
        raise CheckpointError(f"{path}: its {weights} weights are not a state dict (names -> tensors)")
    card, card_notes = model_card(ckpt, path)
    classes = card.classes or [str(i) for i in range(int(config["model"]["num_classes"]))]
    if card.classes is None:
        notes.append("the training data had no class names (synthetic): classes are named by their index")
    if len(classes) != int(config["model"]["num_classes"]):
        raise CheckpointError(f"{path}: {len(classes)} class names for a model of {config['model']['num_classes']} "
                              "classes")
    return WeightsSource(path=path, sha256=file_sha256(path), config=config, state=unwrapped(state), weights=weights,
                         classes=list(classes), transform=EvalTransform.from_dict(card.eval_transform),
                         recorded=recorded_result(ckpt, weights, headline_weights(config, has_ema)),
                         notes=card_notes + notes)

"""Mixup and CutMix on the device, per batch, with soft targets (timm's `Mixup`, mode "batch").

    mixer = BatchMixer.from_config(cfg.train)        # None when train.mixup_alpha = train.cutmix_alpha = 0
    mix = mixer.draw(global_step, height, width)     # on the host: no device value is read
    images, targets = mixer(images, labels, global_step, num_classes, label_smoothing)

A batch is mixed with itself reversed (timm's `x.flip(0)`: no permutation to draw or to move to
the device). With probability `prob` the batch is mixed, then with probability `switch_prob`
(when both alphas are on) by CutMix, else by mixup:

- mixup (Zhang et al. 2018): images `lam x + (1 - lam) x.flip(0)`, lam ~ Beta(mixup_alpha, mixup_alpha);
- CutMix (Yun et al. 2019): a box of the reversed batch pasted into every image, of side
  sqrt(1 - lam) of the image's and centre uniform over the image, clipped at the borders; lam ~
  Beta(cutmix_alpha, cutmix_alpha), then corrected to the area actually kept (timm's `rand_bbox`
  and `correct_lam`).

Targets: `lam onehot(y) + (1 - lam) onehot(y.flip(0))`, each one-hot smoothed first (off =
smoothing / classes, on = 1 - smoothing + off): timm's `mixup_target`, so label smoothing composes
with mixing as in timm. They sum to one. The loss is the cross-entropy with these soft targets
(timm's `SoftTargetCrossEntropy`; `F.cross_entropy` takes probabilities).

Determinism and resume: lam, the choice of mixup or CutMix and the box are drawn in numpy from a
generator seeded by (seed, global step), so a resumed run mixes step n exactly as an uninterrupted
one, and nothing is read back from the device. The same draw on every rank: the global batch is
mixed with one lam, as one process would.

torch.compile: the mixing runs outside the compiled model, on tensors of fixed shape (the box is
pasted into a copy of the batch), so a new lam or box never recompiles the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

STREAM = 0x6D6978  # "mix": keeps these draws apart from the other generators seeded by train.seed


@dataclass(frozen=True)
class Mix:
    """One batch's mixing, as drawn: kind "none", "mixup" or "cutmix"."""

    kind: str
    lam: float  # weight of each image's own label (CutMix: the share of its area it keeps)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # CutMix: top, bottom, left, right (px, end exclusive)


@dataclass(frozen=True)
class BatchMixer:
    """Mixup and/or CutMix per batch (an alpha of 0 turns that one off)."""

    mixup_alpha: float
    cutmix_alpha: float
    prob: float  # probability that a batch is mixed at all
    switch_prob: float  # with both on: probability of CutMix
    seed: int

    @classmethod
    def from_config(cls, train_cfg: Any) -> "BatchMixer | None":
        if train_cfg.mixup_alpha == 0 and train_cfg.cutmix_alpha == 0:
            return None
        return cls(train_cfg.mixup_alpha, train_cfg.cutmix_alpha, train_cfg.mix_prob, train_cfg.mix_switch_prob,
                   train_cfg.seed)

    def draw(self, global_step: int, height: int, width: int) -> Mix:
        """The mixing of step `global_step` for images of height x width: a function of (seed, step) only."""
        rng = np.random.default_rng([self.seed, global_step, STREAM])
        if rng.random() >= self.prob:
            return Mix("none", 1.0)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = rng.random() < self.switch_prob
        else:
            cutmix = self.cutmix_alpha > 0
        if not cutmix:
            return Mix("mixup", float(rng.beta(self.mixup_alpha, self.mixup_alpha)))
        lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        ratio = np.sqrt(1 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        kept = 1 - (bottom - top) * (right - left) / (height * width)
        return Mix("cutmix", float(kept), (int(top), int(bottom), int(left), int(right)))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, global_step: int, num_classes: int,
                 label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, soft targets (N, classes) float32) of step `global_step`; images NCHW."""
        mix = self.draw(global_step, images.shape[-2], images.shape[-1])
        return mix_images(images, mix), mixed_targets(labels, num_classes, mix.lam, label_smoothing)


def mix_images(images: torch.Tensor, mix: Mix) -> torch.Tensor:
    """The batch mixed with itself reversed; a new tensor (the loader's batch is left as it was)."""
    if mix.kind == "mixup":
        return torch.lerp(images, images.flip(0), 1.0 - mix.lam)
    if mix.kind == "cutmix":
        top, bottom, left, right = mix.box
        mixed = images.clone()
        mixed[:, :, top:bottom, left:right] = images[:, :, top:bottom, left:right].flip(0)  # only the box moves
        return mixed
    return images


def mixed_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """timm's mixup_target: lam x smoothed one-hot(labels) + (1 - lam) x smoothed one-hot(labels reversed)."""
    off = smoothing / num_classes
    # scatter_, not F.one_hot: on the CPU one_hot reads the labels' min and max back to check them.
    onehot = torch.full((len(labels), num_classes), off, device=labels.device)
    onehot.scatter_(1, labels[:, None], 1.0 - smoothing + off)
    if lam == 1.0:
        return onehot
    return torch.lerp(onehot, onehot.flip(0), 1.0 - lam)

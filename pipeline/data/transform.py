"""The evaluation transform, described once: what happens to an image between its file and the network.

    transform = EvalTransform.from_config(cfg.data)   # data.eval.* with data.normalize, mean, std, std_eps
    transform.spec                                    # the eval graph's resize and centre crop (AugmentSpec)
    transform.normalize_nhwc(images_uint8)            # the normalization, in torch: NHWC uint8 -> NCHW float32
    transform.to_dict(); EvalTransform.from_dict(d)   # kept in checkpoints and in exported models' metadata

Every consumer of "the eval transform" takes it from here, so none can drift from another: the
evaluation loader (pipeline/data/loader.py), the record in every checkpoint, the normalization
inside an exported ONNX graph and `python -m pipeline.predict` (pipeline/deploy/). The graph
decodes, resizes the shorter side to `size` and takes the centred `crop` x `crop` window
(dali_graph.py); the normalization is the one the trainer applies to a uint8 batch on the GPU
(dali_loader.normalize_batch): per image, (x - mean) / sqrt(var + std_eps) over all pixels and
channels, or per channel, (x / 255 - mean[c]) / std[c].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline.constants import INTERPOLATIONS
from pipeline.data.dali_graph import AugmentSpec, ChannelStats

if TYPE_CHECKING:
    import torch

NORMALIZATIONS = ("image", "channel")


@dataclass(frozen=True)
class EvalTransform:
    size: int  # resized shorter side (px)
    crop: int  # side of the centred square crop (px): the network's input side
    interpolation: str  # nearest | bilinear | bicubic
    normalize: str  # image: per-image standardization; channel: per-channel statistics
    mean: tuple[float, float, float]  # normalize=channel: R, G, B means on the 0-1 scale
    std: tuple[float, float, float]  # normalize=channel: R, G, B standard deviations on the 0-1 scale
    std_eps: float  # normalize=image: added to the per-image variance (pixel units^2)

    @classmethod
    def from_config(cls, data_cfg: Any) -> "EvalTransform":
        """From the config's `data` section: data.eval.size/crop/interpolation and the normalization keys."""
        ev = data_cfg.eval
        return cls(ev.size, ev.crop, ev.interpolation, data_cfg.normalize, tuple(data_cfg.mean), tuple(data_cfg.std),
                   data_cfg.std_eps)

    @classmethod
    def from_dict(cls, values: Any) -> "EvalTransform":
        """From `to_dict()`'s plain data; ValueError naming what is missing or wrong."""
        if not isinstance(values, dict):
            raise ValueError(f"expected a mapping, got {type(values).__name__}")
        missing = [name for name in cls.__dataclass_fields__ if name not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        try:
            transform = cls(int(values["size"]), int(values["crop"]), str(values["interpolation"]),
                            str(values["normalize"]), tuple(float(v) for v in values["mean"]),
                            tuple(float(v) for v in values["std"]), float(values["std_eps"]))
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf)
            raise ValueError(f"malformed values ({exc})") from None
        if (transform.interpolation not in INTERPOLATIONS or transform.normalize not in NORMALIZATIONS
                or len(transform.mean) != 3 or len(transform.std) != 3 or not 0 < transform.crop <= transform.size):
            raise ValueError(f"values out of range: {values}")
        return transform

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON and torch.load(weights_only=True) safe)."""
        values = asdict(self)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        return values

    @property
    def spec(self) -> AugmentSpec:
        """The eval graph's resize and crop: shorter side to `size`, the centred `crop` window, no flip."""
        return AugmentSpec(self.crop, self.size, self.size, False, 0.0, self.interpolation)

    @property
    def channel_stats(self) -> ChannelStats | None:
        """None for per-image standardization, else the per-channel statistics."""
        return ChannelStats(self.mean, self.std) if self.normalize == "channel" else None

    def normalize_nhwc(self, images: "torch.Tensor") -> "torch.Tensor":
        """uint8 NHWC -> the network's float32 NCHW input, as training normalizes a uint8 batch."""
        import torch

        from pipeline.data.dali_loader import normalize_batch

        return normalize_batch(images, self.std_eps, self.channel_stats, torch.float32)

    def describe(self) -> str:
        """'shorter side to 36 px (bilinear), centre 36x36, per-image standardization'."""
        norm = ("per-image standardization" if self.normalize == "image"
                else f"per-channel mean {list(self.mean)} std {list(self.std)}")
        return f"shorter side to {self.size} px ({self.interpolation}), centre {self.crop}x{self.crop}, {norm}"

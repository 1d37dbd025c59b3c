"""ImageSet: one split of a data source, whatever the source (pipeline/data/sources/).

A list of samples (encoded image bytes or decoded uint8 HWC arrays), their integer labels and
class names, and a printable name per sample so that an error can say which file is bad. Sources
only list and fetch; DALI does the decoding and augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pipeline.data.images import check_encoded
from pipeline.data.webdataset import ShardMembers
from pipeline.errors import BadImageError


@dataclass
class ImageSet:
    """One split. Exactly one of `files`, `encoded`, `members` or `arrays` holds the samples."""

    names: Sequence[str]  # printable name of each sample (a path, archive:member, shard:member)
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    files: list[str] | None = None  # encoded images read from disk at fetch time
    encoded: list[np.ndarray] | None = None  # encoded images held in memory (uint8 1-D)
    arrays: np.ndarray | None = None  # decoded images (N, H, W, 3) uint8
    members: ShardMembers | None = None  # encoded images inside tar shards, read by offset at fetch time
    skipped: list[str] = field(default_factory=list)  # names left out by check_images=skip

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_encoded(self) -> bool:
        return self.arrays is None

    def read_encoded(self, index: int) -> np.ndarray:
        """The encoded bytes of one sample as stored (raises OSError if the file is unreadable)."""
        if self.encoded is not None:
            return self.encoded[index]
        if self.members is not None:
            return self.members.read(index)
        return np.fromfile(self.files[index], dtype=np.uint8)

    def fetch_encoded(self, index: int) -> np.ndarray:
        """The encoded bytes of one sample, checked cheaply (non-empty, a known image signature)."""
        try:
            data = self.read_encoded(index)
        except OSError as exc:
            raise BadImageError(f"{self.names[index]}: cannot read ({exc.strerror or exc})") from None
        check_encoded(data, self.names[index])
        return data

    def fetch_arrays(self, indices: np.ndarray) -> np.ndarray:
        return self.arrays[indices]

    def subset(self, keep: np.ndarray) -> "ImageSet":
        """The samples at `keep` (indices), e.g. after a scan dropped undecodable files."""
        dropped = sorted(set(range(len(self))) - set(keep.tolist()))
        return ImageSet(
            names=[self.names[i] for i in keep],
            labels=self.labels[keep],
            classes=self.classes,
            files=[self.files[i] for i in keep] if self.files is not None else None,
            encoded=[self.encoded[i] for i in keep] if self.encoded is not None else None,
            arrays=self.arrays[keep] if self.arrays is not None else None,
            members=self.members.take(keep) if self.members is not None else None,
            skipped=self.skipped + [self.names[i] for i in dropped],
        )

"""Images to classify, and the ONNX modules the deploy tests import or skip without (tests/unit/test_export.py,
tests/e2e/test_deploy.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import encode_image, smooth_image

onnx = pytest.importorskip("onnx")


ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three good JPEGs of different sizes, a file that is not an image, a truncated JPEG, a tar shard of two."""
    import tarfile

    folder = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    for i, side in enumerate((24, 40, 64)):
        (folder / "photos" / "sub").mkdir(parents=True, exist_ok=True)
        (folder / "photos" / ("sub" if i else "") / f"img{i}.jpg").write_bytes(encode_image(smooth_image(rng, side)))
    (folder / "bad").mkdir()
    (folder / "bad" / "notes.jpg").write_text("not an image")
    (folder / "bad" / "cut.jpg").write_bytes(encode_image(smooth_image(rng, 48))[:200])
    with tarfile.open(folder / "shard.tar", "w") as tar:
        for name in ("a.jpg", "b.jpg"):
            path = folder / name
            path.write_bytes(encode_image(smooth_image(rng, 30)))
            tar.add(path, arcname=f"sample/{name}")
    return folder


"""The CIFAR-10 python archive, read so that a file placed by hand cannot run code.

    images, labels = read_batches(tar, ["data_batch_1", ...], archive, verify=True)   # (N, 32, 32, 3) uint8, (N,)

The official archive (cifar-10-python.tar.gz) holds pickles, and unpickling can run any code a
file asks for; users place the archive by hand where the download is blocked (the download error
tells them to). So each batch is
- checked against the official file's MD5 before it is unpickled (the MD5s torchvision lists;
  `data.verify_checksums=false` for an archive made with scripts/make_cifar_archive.py), and
- unpickled by `BatchUnpickler`, which allows only what the format needs: the official batches are
  protocol-2 pickles of a dict with bytes keys, `data` a uint8 numpy array (10000, 3072) rebuilt by
  numpy's array reconstruction, `labels` a list of ints, `filenames` a list of bytes. Any other
  global (`os.system` in a crafted `__reduce__`) is refused, naming the file, before it is called.
A batch of another shape or content is a DataError naming the member.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import DataError

# The official archive's batches and their MD5s (as torchvision's CIFAR10 lists them).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
ROW_BYTES = 3 * 32 * 32  # one image: the red plane, then green, then blue, each 32x32 row-major
NUM_CLASSES = 10
# An official batch is 10,000 rows (about 31 MB): a larger member is refused before it is read.
MAX_MEMBER_BYTES = 64 << 20
FIX = ("replace it with the official archive (data.download=true fetches it), or for an archive you made "
       "yourself (scripts/make_cifar_archive.py) set data.verify_checksums=false")


def _numeric_dtype(*args: Any) -> np.dtype:
    """numpy.dtype for the unpickler, refusing object dtypes (an object array unpickles arbitrary objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"an array of Python objects ({dtype}) is not CIFAR-10 data")
    return dtype


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles written by Python 3 use it for bytes: latin-1 only."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not part of a CIFAR-10 batch")
    return codecs.encode(text, "latin1")


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """(module, name) -> object for every global a CIFAR-10 batch may name.

    numpy pickles an array with _reconstruct (protocols 2-4) or _frombuffer (5), under numpy.core in
    numpy 1 and numpy._core in numpy 2; the functions are taken from how this numpy reduces an array."""
    sample = np.zeros(1, np.uint8)
    reconstruct, frombuffer = sample.__reduce__()[0], sample.__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _numeric_dtype, ("_codecs", "encode"): _latin1}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else: containers, bytes, numbers and numeric numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds") from None


def member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str, verify: bool) -> bytes:
    """The member's bytes, checked against the official MD5 when `verify` (before anything unpickles them)."""
    if member.size > MAX_MEMBER_BYTES:
        raise DataError(f"{where}: {member.size:,} bytes, more than a CIFAR-10 batch holds; not the official "
                        f"archive: {FIX}")
    data = tar.extractfile(member).read()
    if verify:
        name = Path(member.name).name
        digest = hashlib.md5(data).hexdigest()
        if digest != OFFICIAL_MD5[name]:
            raise DataError(f"{where}: MD5 {digest} differs from the official file's ({OFFICIAL_MD5[name]}), so it "
                            f"was not read: {FIX}")
    return data


def parse_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64) from one batch's pickle, or a DataError naming it."""
    try:
        batch = BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:  # pickle's own messages may run over several lines
        raise DataError(f"{where}: refusing to unpickle it: {' '.join(str(exc).split())} (a damaged or tampered "
                        "file)") from None
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise DataError(f"{where}: unreadable CIFAR-10 batch ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = ", ".join(sorted(map(repr, batch))) if isinstance(batch, dict) else f"a {type(batch).__name__}"
        raise DataError(f"{where}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels'; got {keys})")
    images, labels = batch[b"data"], batch[b"labels"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == ROW_BYTES):
        shape = (f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__)
        raise DataError(f"{where}: not a CIFAR-10 batch: data is {shape}, expected uint8 rows of {ROW_BYTES} "
                        "bytes, (N, 3072)")
    listed = isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels)
    if not (listed or isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu"):
        raise DataError(f"{where}: not a CIFAR-10 batch: labels must be a list of integers")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images) or (len(labels) and not 0 <= labels.min() <= labels.max() < NUM_CLASSES):
        raise DataError(f"{where}: not a CIFAR-10 batch: {len(labels)} labels for {len(images)} images, labels "
                        f"{labels.min() if len(labels) else '-'}..{labels.max() if len(labels) else '-'} (expected "
                        f"one per image, 0..{NUM_CLASSES - 1})")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_batches(tar: tarfile.TarFile, names: list[str], archive: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """The named batches of an open archive, concatenated: (images (N, 32, 32, 3) uint8, labels (N,) int64)."""
    members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
    images, labels = [], []
    for name in names:
        if name not in members:
            raise DataError(f"{archive}: member {name} missing (not the official python-format archive?)")
        where = f"{archive}:{members[name].name}"
        batch_images, batch_labels = parse_batch(member_bytes(tar, members[name], where, verify), where)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)

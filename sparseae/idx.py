"""MNIST-style IDX files the user has: ``mnist:DIR`` and ``fashion-mnist:DIR`` data
(:mod:`sparseae.datasets` describes the splits).  Every malformed file is refused with
one :class:`~sparseae.errors.DataError` line naming it and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct

import numpy as np

from sparseae.datasets import FOLDER_KINDS, SPLIT_SEED
from sparseae.errors import DataError

_IDX_TYPES = {0x08: ("unsigned byte", ">u1"), 0x09: ("signed byte", ">i1"),
              0x0B: ("int16", ">i2"), 0x0C: ("int32", ">i4"), 0x0D: ("float32", ">f4"),
              0x0E: ("float64", ">f8")}
_GZIP_MAGIC = b"\x1f\x8b"
_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path) -> np.ndarray:
    """The array of an IDX file (``.gz`` compressed or not), in native byte order.

    IDX: two zero bytes, a type byte (0x08 unsigned byte ... 0x0E float64), the
    number of dimensions, each dimension as a big-endian uint32, then the values
    big-endian.  Raises :class:`DataError` with one line for a file that is not
    IDX, is truncated, or holds more bytes than its header declares.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"data: cannot read {path} ({exc.strerror or exc})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError) as exc:
            raise DataError(f"data: {path} is not a readable gzip file ({exc})") from None
    elif path.endswith(".gz"):
        raise DataError(f"data: {path} is not a gzip file (it does not start with the gzip "
                        "magic bytes 1f 8b)")
    if len(raw) < 4:
        raise DataError(f"data: {path} is not an IDX file ({len(raw)} bytes; an IDX file "
                        "starts with a 4-byte magic number)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        magic = struct.unpack(">I", raw[:4])[0]
        raise DataError(f"data: {path} is not an IDX file (magic number 0x{magic:08x}; "
                        "expected two zero bytes, a type byte 08-0e and a dimension count, "
                        "e.g. 0x00000803 for images)")
    type_name, dtype = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"data: {path} is truncated: its header declares {ndim} dimensions "
                        f"but the file ends after {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    itemsize = np.dtype(dtype).itemsize
    expected = int(np.prod(shape, dtype=np.int64)) * itemsize
    have = len(raw) - header
    if have < expected:
        raise DataError(f"data: {path} is truncated: its header declares {type_name} values "
                        f"of shape {'x'.join(map(str, shape))} ({expected} bytes) but it "
                        f"holds {have} bytes")
    if have > expected:
        raise DataError(f"data: {path} has {have - expected} bytes after the "
                        f"{'x'.join(map(str, shape))} {type_name} values its header declares "
                        "(not an IDX file of that shape)")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def find_images(folder: str, split: str, label: str = "MNIST") -> str:
    """The path of the ``split`` ("train" or "test") images in ``folder``."""
    prefixes = "|".join(_PREFIXES[split])
    pattern = re.compile(rf"^({prefixes})-images([-.]idx3[-.]ubyte|(-idx3)?\.idx)(\.gz)?$")
    found = sorted(f for f in os.listdir(folder) if pattern.match(f)
                   and os.path.isfile(os.path.join(folder, f)))
    if not found:
        want = "train-images-idx3-ubyte" if split == "train" else "t10k-images-idx3-ubyte"
        raise DataError(f"data: no {label} {'training' if split == 'train' else 'test'} "
                        f"images in {folder} (expected {want}, or .idx3-ubyte / .idx names, "
                        "optionally .gz)")
    # uncompressed before compressed, then t10k before test, names in order
    found.sort(key=lambda f: (f.endswith(".gz"), _PREFIXES[split].index(f.split("-")[0]), f))
    return os.path.join(folder, found[0])


def _images(path) -> np.ndarray:
    arr = read_idx(path)
    if arr.dtype != np.uint8:
        raise DataError(f"data: {path} holds {arr.dtype} values; images are unsigned bytes "
                        "(IDX type 0x08)")
    if arr.ndim < 2:
        raise DataError(f"data: {path} holds a {arr.ndim}-D array of {arr.shape[0]} values "
                        "(labels?); expected images (count, rows, cols)")
    if arr.shape[0] == 0 or arr[0].size == 0:
        raise DataError(f"data: {path} holds no images (shape "
                        f"{'x'.join(map(str, arr.shape))})")
    return arr.reshape(arr.shape[0], -1)


def mnist_folder(folder, split_seed: int = SPLIT_SEED, kind: str = "mnist"):
    """MNIST / Fashion-MNIST IDX files in ``folder``: ``(dataset, meta)``."""
    from sparseae.data import Dataset

    label = FOLDER_KINDS[kind]
    folder = os.path.expanduser(os.fspath(folder))
    if not os.path.exists(folder):
        raise DataError(f"data: {kind}: folder not found: {folder}")
    if not os.path.isdir(folder):
        raise DataError(f"data: {kind}: {folder} is not a folder (give the folder holding "
                        "the IDX files)")
    paths = {s: find_images(folder, s, label) for s in ("train", "test")}
    arrays = {s: _images(p) for s, p in paths.items()}
    tr, te = arrays["train"], arrays["test"]
    if tr.shape[1] != te.shape[1]:
        raise DataError(f"data: {kind}: the training images have {tr.shape[1]} pixels but the "
                        f"test images {te.shape[1]} ({paths['train']}, {paths['test']})")
    n = tr.shape[0]
    if n < 2:
        raise DataError(f"data: {paths['train']} holds {n} image; the validation split is "
                        "carved from the training images, so at least 2 are needed")
    n_val = max(1, n // 12)
    perm = np.random.default_rng(split_seed).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    def scale(a):
        x = a.astype(np.float32)
        x /= np.float32(255.0)  # in place: one 4-byte array per split, not two
        return x

    meta = {
        "dataset": kind,
        "source": f"{label} IDX files: {os.path.abspath(paths['train'])}, "
                  f"{os.path.abspath(paths['test'])}",
        "version": "train sha256 " + _file_sha(paths["train"]) + ", test sha256 "
                   + _file_sha(paths["test"]),
        "preprocessing": "pixels (unsigned bytes) divided by 255, images flattened row by row",
        "split_seed": split_seed,
        "split": f"validation n//12 of the {n} training images drawn by numpy "
                 "default_rng(split_seed).permutation, train the rest; the test file's "
                 "images: test; row order kept",
    }
    return Dataset(scale(tr[train]), scale(te), scale(tr[val])), meta


def _file_sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

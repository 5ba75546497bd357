"""Data: the binary-clustering task (ALGORITHM.md section 1) and user data.

A :class:`Dataset` holds three float32 splits (train, test, validation) of the
same width with values in [0, 1] (the model's sigmoid output and L1 loss need
that range).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sparseae._atomic import atomic_target
from sparseae.errors import DataError

SPLITS = ("train", "test", "validation")


@dataclass
class Dataset:
    """Three float32 ``(N, dim)`` splits in [0, 1]."""

    train: np.ndarray
    test: np.ndarray
    validation: np.ndarray

    def __post_init__(self):
        dims = set()
        for name in SPLITS:
            arr = check_split(getattr(self, name), name)
            setattr(self, name, arr)
            dims.add(arr.shape[1])
        if len(dims) != 1:
            raise DataError(
                "data: splits have different widths "
                + ", ".join(f"{n}={getattr(self, n).shape[1]}" for n in SPLITS)
            )

    @property
    def dim(self) -> int:
        return self.train.shape[1]


def check_split(arr, name: str) -> np.ndarray:
    """Validate one split and return it as C-contiguous float32.

    Raises :class:`DataError` for non-2-D or empty arrays, NaN/inf, or values
    outside [0, 1].
    """
    a = np.asarray(arr)
    if a.ndim != 2:
        raise DataError(f"data: split '{name}' must be 2-D (samples, features), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"data: split '{name}' is empty (shape {a.shape})")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"data: split '{name}' has non-numeric dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"data: split '{name}' has complex values ({a.dtype}); the model "
                        "needs real values in [0, 1]")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise DataError(f"data: split '{name}' contains NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"data: split '{name}' has values in [{lo:g}, {hi:g}]; the sigmoid/L1 model "
            "needs data in [0, 1] (rescale it first)"
        )
    return a


def binary_clustering(
    n_clusters: int = 10,
    dim: int = 1000,
    per_cluster: int = 100,
    noise: float = 0.05,
    seed: int = 0,
    quirks: bool = False,
) -> Dataset:
    """The binary-clustering task, default (paper-text) semantics.

    ``n_clusters`` centroids of ``dim`` bits, each bit Bernoulli(0.5); each
    sample is a centroid with every bit flipped independently with probability
    ``noise``.  Train, test and validation each hold ``n_clusters *
    per_cluster`` rows in blocks of the centroids repeated (c0..c{k-1}, c0..),
    with independent noise per split.

    With ``quirks`` (gecco25) the reference's generator: centroid entries
    drawn from Binomial(2, 0.5) and read as booleans (a bit is 1 with
    probability 0.75), and the test and validation noise drawn once for one
    block of ``per_cluster`` rows and repeated across the ``n_clusters``
    blocks.

    Notes
    -----
    ALGORITHM.md section 1.  The best possible L1 is about ``noise``.
    """
    for name, val, lo in (("clusters", n_clusters, 1), ("dim", dim, 1), ("per_cluster", per_cluster, 1)):
        if int(val) != val or val < lo:
            raise DataError(f"data: {name} must be an integer >= {lo}, got {val!r}")
    if not 0.0 <= noise <= 1.0:
        raise DataError(f"data: noise must be in [0, 1], got {noise!r}")
    from sparseae._memory import check_data

    check_data(int(n_clusters), int(dim), int(per_cluster))
    rng = np.random.default_rng(seed)
    if quirks:
        centroids = rng.binomial(2, 0.5, (n_clusters, dim)) > 0
    else:
        centroids = rng.random((n_clusters, dim)) < 0.5
    rows = np.tile(centroids, (per_cluster, 1))
    splits = []
    for split in SPLITS:
        if quirks and split != "train":
            block = rng.random((per_cluster, dim)) < noise
            flips = np.tile(block, (n_clusters, 1))
        else:
            flips = rng.random(rows.shape) < noise
        splits.append((rows ^ flips).astype(np.float32))
    return Dataset(*splits)


#: File name extensions :func:`load` and :func:`save` understand.
EXTENSIONS = (".h5", ".hdf5", ".npz")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip file with members / an empty one


def load(path) -> Dataset:
    """Load user data from ``.h5``/``.hdf5`` (datasets ``train``, ``test``,
    ``validation``) or ``.npz`` (arrays of those names), or the data set a name
    stands for (``digits``, ``mnist1d``, ``mnist:DIR``...: :mod:`sparseae.datasets`).

    All three splits are required (CONJUNCTIVE draws its held-out samples from
    ``validation``, and the summary reports ``validation_l1``).  HDF5 files with
    links, external storage or virtual datasets are refused.  Raises
    :class:`DataError` with one line naming the problem.
    """
    from sparseae import datasets
    from sparseae._h5 import check_plain, first_line

    path = os.fspath(path)
    if not path.strip():
        raise DataError("data: the file name is empty")
    if datasets.is_named(path):
        return datasets.load(path)
    if not os.path.exists(path):
        hint = ""
        if os.sep not in path and not os.path.splitext(path)[1]:
            hint = f" (nor a data set name; {datasets.names_hint()})"
        raise DataError(f"data: file not found: {path}{hint}")
    if os.path.isdir(path):
        raise DataError(f"data: {path} is a folder, expected an .h5 or .npz file")
    if not os.access(path, os.R_OK):
        raise DataError(f"data: file not readable: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npz":
            with open(path, "rb") as fh:  # np.load gets it: closed even if corrupt
                if fh.read(4) not in _ZIP_MAGIC:
                    raise DataError(f"data: {path} is not a readable npz file (not a zip archive)")
                fh.seek(0)
                with np.load(fh, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files if k in SPLITS}
        else:
            import h5py

            with h5py.File(path, "r") as f:
                check_plain(f, path, DataError, "data")
                arrays = {k: f[k][()] for k in SPLITS if k in f and isinstance(f[k], h5py.Dataset)}
    except DataError:
        raise
    except Exception as exc:  # h5py/zipfile raise many types for corrupt files
        kind = "npz" if ext == ".npz" else "HDF5"
        raise DataError(f"data: {path} is not a readable {kind} file ({type(exc).__name__}: "
                        f"{first_line(exc) if str(exc) else 'corrupt'})") from None
    for required in SPLITS:
        if required not in arrays:
            raise DataError(f"data: {path} has no '{required}' array (need train, test and "
                            "validation; split one off your training data for validation)")
    try:
        return Dataset(arrays["train"], arrays["test"], arrays["validation"])
    except DataError as exc:  # name the file
        raise DataError(f"data: {path}: {str(exc).removeprefix('data: ')}") from None


def save(path, data: Dataset, meta: dict | None = None) -> None:
    """Write ``data`` to ``.h5``/``.hdf5`` (datasets train/test/validation, uint8 when
    binary, else float32) or ``.npz``, atomically (temp file, then rename).

    ``meta`` (e.g. the generator's parameters) is recorded: as root attributes of
    the HDF5 file (besides ``format``, ``format-version``, ``generated-by`` and
    ``created``), as a JSON string array ``meta`` in an ``.npz``.
    """
    import json

    from sparseae import _h5

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise DataError(f"data: {path} has the extension {ext or '(none)'!r}; expected one of "
                        f"{', '.join(EXTENSIONS)}")
    meta = dict(meta or {})
    arrays = {}
    for name in SPLITS:
        arr = getattr(data, name)
        binary = bool(np.all((arr == 0) | (arr == 1)))
        arrays[name] = arr.astype(np.uint8) if binary else arr
    with atomic_target(path, _WriteError) as tmp:
        if ext == ".npz":
            header = {"format": "sparseae-data", "generated-by": _h5.generated_by(),
                      "created": _h5.now(), **meta}
            with open(tmp, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(header, sort_keys=True)),
                                    **arrays)
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                _h5.stamp(f, "sparseae-data", 1)
                for key, value in meta.items():
                    f.attrs[key] = value
                for name, arr in arrays.items():
                    f.create_dataset(name, data=arr, compression="gzip", compression_opts=4)


class _WriteError(DataError):
    def __init__(self, msg):
        super().__init__(f"data: {msg}")

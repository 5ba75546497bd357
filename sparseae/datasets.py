"""Data sets by name, and MNIST-style IDX files the user has (issue 15).

A run's ``data`` (``--data``) is a file path, a built-in name, or ``KIND:DIR``:

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 x 64, values 0-16) divided
  by 16; ``digits-binary``: the same thresholded at 8 (``x / 16 >= 0.5`` gives 1).
  Splits of the 1,797 rows drawn with the split seed: test and validation 359
  rows each (n // 5), train 1,079.  Needs scikit-learn (extra ``datasets``).
* ``mnist1d``: the ``mnist1d`` package's offline generator ``make_dataset`` with
  its default arguments (5,000 sequences of 40 values, its seed 42; never its
  download path), mapped onto [0, 1] by one affine map (the min and max over all
  5,000 sequences, which the generator itself standardises together).  Its
  4,000 training sequences give train 3,500 and validation 500 (n // 8, drawn
  with the split seed); its 1,000 test sequences are the test split.  Needs
  ``mnist1d`` (extra ``datasets``).  The generated arrays are kept in the
  per-user cache folder (``$XDG_CACHE_HOME/sparseae/datasets``), so later loads
  skip the generator.
* ``binary-clustering``: the generated task of :func:`sparseae.data.binary_clustering`;
  in a config it means "generate from the config's clusters, dim, ... fields"
  (the config's ``data`` becomes None); :func:`load` gives the generator's
  defaults.
* ``mnist:DIR`` / ``fashion-mnist:DIR``: the IDX files of MNIST or Fashion-MNIST
  in DIR (``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``, also named
  ``*.idx3-ubyte``, ``*.idx``, and any of them ``.gz``).  Pixels / 255, images
  flattened; the validation split is n // 12 of the training images (5,000 of
  60,000) drawn with the split seed; t10k is the test split.

Splits keep the source's row order (the drawn index sets are sorted).  The split
seed is 0 for names; ``sparseae data NAME --split-seed S -o FILE`` writes other
splits to a file.  :func:`build` returns the data and their provenance (source,
version, preprocessing, split seed), which ``sparseae data`` stores as the file's
attributes.  Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np

from sparseae.errors import DataError

#: Built-in data sets: name -> one line on what it is.
BUILTIN = {
    "digits": "scikit-learn's 8x8 digits (1,797 x 64) / 16",
    "digits-binary": "scikit-learn's 8x8 digits thresholded at 8 (binary)",
    "mnist1d": "the mnist1d package's generator (5,000 x 40) mapped onto [0, 1]",
    "binary-clustering": "the generated binary-clustering task",
}
#: Loaders of files the user has: ``KIND:DIR``.
FOLDER_KINDS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
#: The split seed of names (``sparseae data NAME --split-seed`` writes others).
SPLIT_SEED = 0
#: The optional extra that holds the packages the built-in data sets need.
EXTRA = "pip install 'sparseae[datasets]'"

def names_hint() -> str:
    return (f"built-in data sets: {', '.join(BUILTIN)}; MNIST-style files: "
            f"{', '.join(k + ':DIR' for k in FOLDER_KINDS)}")


def parse(value) -> tuple | None:
    """``(name, None)`` for a built-in name, ``(kind, DIR)`` for ``KIND:DIR``,
    None for anything else (a file path)."""
    if not isinstance(value, str):
        return None
    if value in BUILTIN:
        return value, None
    for kind in FOLDER_KINDS:
        if value.startswith(kind + ":"):
            return kind, value[len(kind) + 1:]
    return None


def is_named(value) -> bool:
    """Whether a config's ``data`` names a data set (not a file)."""
    return parse(value) is not None


def canonical(value):
    """A config's ``data`` in canonical form: None for ``binary-clustering``
    (generated from the config's fields), a name or ``KIND:DIR`` as given, and the
    same for a name that a config file or sweep spec joined onto its folder
    (``/spec/folder/digits`` that is no file is ``digits``; ``/spec/folder/mnist:x``
    is ``mnist:/spec/folder/x``, so DIR is relative to the file, as data paths are).

    The second rule exists because sweep specs join every relative ``data`` onto
    their folder; it applies only to absolute paths that do not exist (the
    command line refuses a missing file before it gets here).  An empty DIR is
    refused by :func:`check`, not here."""
    if not isinstance(value, str):
        return value
    parsed = parse(value)
    if parsed is None and not os.path.exists(value):
        parsed = _unjoin(value)
    if parsed is None:
        return value
    name, folder = parsed
    if name == "binary-clustering":
        return None
    return name if folder is None else f"{name}:{folder}"


def _unjoin(path: str):
    if not os.path.isabs(path):
        return None
    if os.path.basename(path) in BUILTIN:
        return os.path.basename(path), None
    parts = path.split(os.sep)
    for i, part in enumerate(parts[1:], 1):
        for kind in FOLDER_KINDS:
            if part.startswith(kind + ":"):
                first = part[len(kind) + 1:]
                prefix = os.sep.join(parts[:i]) or os.sep
                rest = os.sep.join(parts[i + 1:])
                if first.startswith("~"):  # "KIND:~/dir": the user's folder
                    return kind, os.path.normpath(os.path.expanduser(os.path.join(first, rest)))
                if first:  # "KIND:rel/dir" joined onto the folder
                    return kind, os.path.normpath(os.path.join(prefix, first, rest))
                if rest:  # "KIND:/abs/dir": the joining split it after "KIND:"
                    return kind, os.sep + rest
                return kind, ""
    return None


def check(value) -> None:
    """Refuse a malformed name (``mnist:`` without a folder): :class:`DataError`."""
    parsed = parse(value)
    if parsed is not None and parsed[1] is not None and not parsed[1].strip():
        raise DataError(f"data: {parsed[0]}: needs a folder ({parsed[0]}:DIR, the folder "
                        f"of the {FOLDER_KINDS[parsed[0]]} IDX files)")


def describe(value) -> str:
    """A few words on where named data come from (for run summaries)."""
    name, folder = parse(value)
    if folder is not None:
        return f"{FOLDER_KINDS[name]} IDX files in {os.path.abspath(folder)} (split seed " \
               f"{SPLIT_SEED})"
    return f"built-in {name}: {BUILTIN[name]} (split seed {SPLIT_SEED})"


# ------------------------------------------------------------------------ loading

_MEMO: dict = {}


def load(value, split_seed: int = SPLIT_SEED):
    """The :class:`~sparseae.data.Dataset` a name or ``KIND:DIR`` stands for.

    Built-in data are built once per process (each call returns fresh copies).
    Raises :class:`DataError` (one line) for a missing package, folder or file,
    or a malformed file.
    """
    from sparseae.data import Dataset

    name, folder = parse(value) or (None, None)
    if name is None:
        raise DataError(f"data: {value!r} is not a data set name ({names_hint()})")
    if folder is not None:
        return build(value, split_seed)[0]
    key = (name, int(split_seed))
    if key not in _MEMO:
        _MEMO[key] = build(value, split_seed)[0]
    d = _MEMO[key]
    return Dataset(d.train.copy(), d.test.copy(), d.validation.copy())


def build(value, split_seed: int = SPLIT_SEED):
    """``(dataset, meta)``: the data of a name or ``KIND:DIR`` and their provenance
    (``source``, ``version``, ``preprocessing``, ``split_seed``, ``dataset``...)."""
    check(value)
    name, folder = parse(value) or (None, None)
    if name is None:
        raise DataError(f"data: {value!r} is not a data set name ({names_hint()})")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) \
            or split_seed < 0:
        raise DataError(f"data: the split seed must be an integer >= 0, got {split_seed!r}")
    split_seed = int(split_seed)
    if folder is not None:
        from sparseae.idx import mnist_folder

        return mnist_folder(folder, split_seed, kind=name)
    if name in ("digits", "digits-binary"):
        return digits(name == "digits-binary", split_seed)
    if name == "mnist1d":
        return mnist1d(split_seed)
    from sparseae import __version__
    from sparseae.data import binary_clustering

    meta = {"dataset": "binary-clustering", "source": "sparseae binary-clustering generator",
            "version": f"sparseae {__version__}", "preprocessing": "none (bits)",
            "split_seed": 0, "clusters": 10, "dim": 1000, "per_cluster": 100, "noise": 0.05,
            "seed": 0, "quirks": False}
    return binary_clustering(), meta


def _need(module: str, package: str, name: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"data: the built-in data set {name!r} needs {package}, which is not "
                        f"installed: {EXTRA}") from None


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _three_way(n: int, n_test: int, n_val: int, seed: int):
    """Sorted row indices (train, validation, test) of ``n`` rows, drawn with ``seed``."""
    perm = np.random.default_rng(seed).permutation(n)
    test = np.sort(perm[:n_test])
    val = np.sort(perm[n_test:n_test + n_val])
    train = np.sort(perm[n_test + n_val:])
    return train, val, test


def _digits_raw(name: str) -> np.ndarray:
    """scikit-learn's digits ``(1797, 64)`` float64: read from the csv file bundled with
    the package (what ``load_digits`` reads, without importing scikit-learn, which
    takes about a second), else from ``sklearn.datasets.load_digits()``."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        _need("sklearn.datasets", "scikit-learn", name)  # raises the one-line error
    for root in (spec and spec.submodule_search_locations) or ():
        path = os.path.join(root, "datasets", "data", "digits.csv.gz")
        try:
            with gzip.open(path, "rt") as fh:
                table = np.loadtxt(fh, delimiter=",")
        except Exception:
            continue
        if table.ndim == 2 and table.shape[1] == 65:
            return np.ascontiguousarray(table[:, :-1])
    return np.asarray(_need("sklearn.datasets", "scikit-learn", name).load_digits().data)


def digits(binary: bool = False, split_seed: int = SPLIT_SEED):
    """scikit-learn's digits: ``(dataset, meta)`` (see the module's docstring)."""
    from sparseae.data import Dataset

    name = "digits-binary" if binary else "digits"
    X = _digits_raw(name)
    if X.ndim != 2 or X.shape[1] != 64 or X.min() < 0 or X.max() > 16:
        raise DataError(f"data: scikit-learn's digits have shape {X.shape} and values in "
                        f"[{X.min():g}, {X.max():g}], expected (n, 64) in [0, 16]")
    X = (X >= 8).astype(np.float32) if binary else (X / 16.0).astype(np.float32)
    n = X.shape[0]
    train, val, test = _three_way(n, n // 5, n // 5, split_seed)
    meta = {
        "dataset": name,
        "source": "scikit-learn's bundled digits (sklearn/datasets/data/digits.csv.gz, what "
                  "sklearn.datasets.load_digits reads; UCI optical recognition of "
                  "handwritten digits, test part)",
        "version": f"scikit-learn {_version('scikit-learn')}",
        "preprocessing": ("pixel values 0-16 thresholded: 1 where value >= 8, else 0"
                          if binary else "pixel values 0-16 divided by 16"),
        "split_seed": split_seed,
        "split": f"of {n} rows: test n//5, validation n//5, train the rest, drawn by "
                 "numpy default_rng(split_seed).permutation; row order kept",
    }
    return Dataset(X[train], X[test], X[val]), meta


#: mnist1d's generator arguments we use: its defaults (recorded in the file).
MNIST1D_SEED = 42


def _mnist1d_raw():
    """mnist1d's ``make_dataset`` output ``(x, x_test, version)`` (float64), from the
    per-user cache when present, else generated (and cached)."""
    version = _version("mnist1d")
    cache = _cache_file(f"mnist1d-{version}-seed{MNIST1D_SEED}.npz")
    if cache is not None and os.path.isfile(cache):
        try:
            with open(cache, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                x, x_test, digest = z["x"], z["x_test"], str(z["sha256"])
            if _digest(x, x_test) == digest and x.ndim == 2 and x_test.shape[1:] == x.shape[1:]:
                return x, x_test, version
        except Exception:  # a damaged cache file: generate again
            pass
    mnist1d = _need("mnist1d.data", "mnist1d", "mnist1d")
    import random

    args = mnist1d.get_dataset_args()
    # make_dataset seeds numpy's and Python's global generators: leave them as they were
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = mnist1d.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.ascontiguousarray(raw["x"], dtype=np.float64)
    x_test = np.ascontiguousarray(raw["x_test"], dtype=np.float64)
    if cache is not None:
        _write_cache(cache, x=x, x_test=x_test, sha256=np.array(_digest(x, x_test)))
    return x, x_test, version


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _cache_file(name: str):
    from sparseae import _cache

    folder = os.path.join(_cache.user_dir(), "datasets")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    return os.path.join(folder, name)


def _write_cache(path, **arrays) -> None:
    import contextlib

    from sparseae._atomic import atomic_target

    with contextlib.suppress(Exception):  # a cache that cannot be written is no error
        with atomic_target(path, DataError) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)


def mnist1d(split_seed: int = SPLIT_SEED):
    """MNIST-1D from the package's offline generator: ``(dataset, meta)``."""
    from sparseae.data import Dataset

    x, x_test, version = _mnist1d_raw()
    lo = float(min(x.min(), x_test.min()))
    hi = float(max(x.max(), x_test.max()))

    def scale(a):
        return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)

    n = x.shape[0]
    perm = np.random.default_rng(split_seed).permutation(n)
    val, train = np.sort(perm[:n // 8]), np.sort(perm[n // 8:])
    meta = {
        "dataset": "mnist1d",
        "source": "mnist1d.data.make_dataset (github.com/greydanus/mnist1d), its default "
                  f"arguments: 5,000 sequences of 40, seed {MNIST1D_SEED}; generated here, "
                  "not downloaded",
        "version": f"mnist1d {version}",
        "preprocessing": f"(x - {lo!r}) / ({hi!r} - {lo!r}): the min and max over all "
                         "5,000 sequences (the generator standardises them together) onto "
                         "[0, 1]",
        "scale_min": lo,
        "scale_max": hi,
        "split_seed": split_seed,
        "split": f"the generator's {n} training sequences: validation n//8 drawn by numpy "
                 "default_rng(split_seed).permutation, train the rest; its "
                 f"{x_test.shape[0]} test sequences: test; row order kept",
    }
    return Dataset(scale(x[train]), scale(x_test), scale(x[val])), meta

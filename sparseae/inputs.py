"""What a run trains on: its data and the architecture that fits them.

:func:`make_data` builds or loads the data a config describes,
:func:`fingerprint` ties a checkpoint to them, and :func:`resolve_arch` fits a
preset's input width to the data (explicit widths must match).
"""

from __future__ import annotations

import hashlib

from sparseae.data import SPLITS, Dataset, binary_clustering, load
from sparseae.errors import DataError
from sparseae.model import PRESETS, Architecture


def make_data(config) -> Dataset:
    """The data a config describes: its ``data`` file, or generated binary clustering."""
    if config.data is not None:
        return load(config.data)
    seed = config.seed if config.data_seed is None else config.data_seed
    return binary_clustering(config.clusters, config.dim, config.per_cluster, config.noise, seed,
                             quirks=config.data_quirks)


def fingerprint(data: Dataset) -> str:
    """SHA-256 of the three splits (shape, dtype and bytes): ties a checkpoint to its data."""
    h = hashlib.sha256()
    for name in SPLITS:
        arr = getattr(data, name)
        h.update(f"{name}{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def run_fingerprint(run) -> str:
    """:func:`fingerprint` of ``run.data``, computed once per run (the data never change)."""
    sha = getattr(run, "_data_sha256", None)
    if sha is None:
        sha = run._data_sha256 = fingerprint(run.data)
    return sha


def resolve_arch(config, data: Dataset) -> Architecture:
    """The architecture for ``data``: a preset's input width follows the data;
    explicit widths must match it."""
    arch = Architecture.parse(config.arch)
    if config.arch in PRESETS:
        return arch.with_input_dim(data.dim)
    if arch.input_dim != data.dim:
        raise DataError(
            f"data: width {data.dim} does not match the architecture's input width "
            f"{arch.input_dim} (--arch {config.arch})"
        )
    return arch

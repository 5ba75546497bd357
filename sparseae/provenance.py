"""Where a run's data came from, recorded in its checkpoints, and finding it again.

A checkpoint's state records the SHA-256 of the data (``data_sha256``, over the
three splits as float32) and, for data read from a file, its absolute path
(``data_path``) and its path relative to the checkpoint's folder
(``data_relpath``).  :func:`locate` finds the data of a checkpoint for ``eval``
and ``--resume``: the recorded absolute path, else the same relative place next
to the (possibly moved) checkpoint, accepting only a file whose content hash
matches; it says which one it used.  Generated data is regenerated from the
config and checked the same way, and so are named data sets (``digits``,
``mnist:DIR``: :mod:`sparseae.datasets`), built again from the name.
"""

from __future__ import annotations

import os
import warnings

from sparseae.errors import DataError, SparseaeWarning


def data_path(config) -> str | None:
    """The absolute path of ``config``'s data file (None for generated or named data)."""
    from sparseae.datasets import is_named

    if config.data is None or is_named(config.data):
        return None
    return os.path.abspath(config.data)


def state_paths(recorded: str | None, checkpoint_path) -> dict:
    """The state entries locating a data file from a checkpoint written to ``checkpoint_path``."""
    if recorded is None:
        return {}
    out = {"data_path": recorded}
    try:
        folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint_path)))
        out["data_relpath"] = os.path.relpath(recorded, folder)
    except ValueError:  # another drive (Windows)
        pass
    return out


def _candidates(ck, checkpoint_path, config) -> list:
    folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint_path)))
    state = ck.state
    found = []
    recorded = state.get("data_path")
    if isinstance(recorded, str) and recorded:
        found.append((recorded, "the recorded path"))
    rel = state.get("data_relpath")
    if isinstance(rel, str) and rel:
        found.append((os.path.normpath(os.path.join(folder, rel)), "next to the checkpoint"))
    if not found and config.data is not None:  # written before paths were recorded
        if os.path.isabs(config.data):
            found.append((config.data, "the recorded path"))
        else:
            found.append((os.path.join(folder, config.data), "next to the checkpoint"))
            found.append((os.path.abspath(config.data), "in the current folder"))
    seen, unique = set(), []
    for path, how in found:
        if path not in seen:
            seen.add(path)
            unique.append((path, how))
    return unique


def locate(ck, checkpoint_path, config):
    """``(data, path)``: the data ``ck`` was trained on (``path`` None when generated).

    Raises :class:`DataError` (one line) when no candidate exists or none has the
    recorded content hash; warns (:class:`SparseaeWarning`) when the data was found
    somewhere other than its recorded path.
    """
    from sparseae.inputs import fingerprint, make_data
    from sparseae.data import load
    from sparseae.datasets import is_named

    expected = ck.state.get("data_sha256")
    if config.data is None:
        data = make_data(config)
        if expected is not None and fingerprint(data) != expected:
            raise DataError(f"data: the generated data of {checkpoint_path} (clusters, dim, "
                            "noise, seed) do not hash to what it was trained on; the generator "
                            "changed, pass --data")
        return data, None
    if is_named(config.data):  # built again from the name (same source, seed and split)
        data = make_data(config)
        if expected is not None and fingerprint(data) != expected:
            raise DataError(f"data: {config.data} no longer gives the data {checkpoint_path} "
                            "was trained on (its SHA-256 differs: another package version or "
                            "other files?); pass --data with a file of the original data")
        return data, None
    candidates = _candidates(ck, checkpoint_path, config)
    mismatched = []
    for i, (path, how) in enumerate(candidates):
        if not os.path.isfile(path):
            continue
        data = load(path)
        if expected is not None and fingerprint(data) != expected:
            mismatched.append(path)
            continue
        if i > 0:
            warnings.warn(f"data: {candidates[0][0]} is missing or changed; using {path} "
                          f"({how})", SparseaeWarning, stacklevel=2)
        return data, path
    tried = " or ".join(p for p, _ in candidates)
    if mismatched:
        raise DataError(f"data: {mismatched[0]} is not the data {checkpoint_path} was trained "
                        "on (its SHA-256 differs); pass --data with the original file")
    raise DataError(f"data: file not found: {tried} (the data of {checkpoint_path}); pass "
                    "--data with its new place")


def describe(config, data_sha256: str, data_file: str | None = None) -> dict:
    """What a summary needs to say which run it is: profile, seed, lr, data, version."""
    from sparseae import __version__

    from sparseae import datasets

    if data_file is None and config.data is not None:
        data_file = (datasets.describe(config.data) if datasets.is_named(config.data)
                     else os.path.abspath(config.data))
    if data_file is None:
        seed = config.seed if config.data_seed is None else config.data_seed
        source = (f"generated binary-clustering (clusters {config.clusters}, dim {config.dim}, "
                  f"per_cluster {config.per_cluster}, noise {config.noise:g}, seed {seed}"
                  + (", gecco25 quirks)" if config.data_quirks else ")"))
    else:
        source = data_file
    return {"profile": config.profile, "seed": config.seed, "lr": config.lr, "data": source,
            "data_sha256": data_sha256, "sparseae": __version__}

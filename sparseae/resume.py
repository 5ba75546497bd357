"""Checkpoints of runs: save, read and validate, restore into a new run.

Both run classes (:class:`~sparseae.run.Run`) go through these: a checkpoint
is read and checked against its schema (:mod:`sparseae.schema`) once, its
arenas are restored only when they keep the masks' promise (a pruned entry
is exactly 0 in the parameters and both Adam moments), and a resumed run
must have the same architecture and data.
"""

from __future__ import annotations

import numpy as np

from sparseae import checkpoint as ckpt_io
from sparseae.config import TrainConfig
from sparseae.errors import CheckpointError, ConfigError
from sparseae.inputs import run_fingerprint


def read_checkpoint(path, keys, ck=None, kind: str = "canonical"):
    """Load a checkpoint of ``kind`` and validate its config and the state ``keys``;
    return ``(checkpoint, config)``."""
    from sparseae.schema import check_checkpoint

    ck = ckpt_io.load(path) if ck is None else ck
    if ck.kind != kind:
        raise CheckpointError(f"checkpoint: {path} holds a {ck.kind} run, not a {kind} one")
    if not isinstance(ck.config, dict) or not isinstance(ck.state, dict):
        raise CheckpointError(f"checkpoint: {path} has a malformed config or state")
    try:
        config = TrainConfig.from_dict(ck.config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint: {path} holds an invalid config ({exc})") from None
    check_checkpoint(ck, path, config, keys, resume="rng" in keys)
    return ck, config


def save_checkpoint(ck, config: TrainConfig, path) -> None:
    """Write ``ck`` to ``path`` (atomically), recording where ``config``'s data file is
    relative to it, so that the checkpoint finds its data again."""
    from sparseae.provenance import data_path, state_paths

    ck.state.update(state_paths(data_path(config), path))
    ckpt_io.save(path, ck)


def save_run(run, path) -> None:
    """Write ``run.to_checkpoint()`` to ``path`` (:func:`save_checkpoint`)."""
    save_checkpoint(run.to_checkpoint(), run.config, path)


def resume_config(ck, path, config: TrainConfig, data, epochs, keep_schedule=False):
    """The config and data a resumed run starts from.

    ``epochs`` is the new total (refused below the epochs done).  The lr decay
    step and the schedules' T then follow the new total, unless ``keep_schedule``
    keeps them at the checkpoint's (``schedule_epochs``).  The checkpoint's data
    are found again (:func:`sparseae.provenance.locate`) unless ``data`` is given.
    """
    done = int(ck.state["epoch"])
    if epochs is not None:
        if epochs < done:
            raise ConfigError(f"epochs: must be >= {done}, the epochs {path} has done "
                              f"(a run cannot be shortened), got {epochs}")
        if keep_schedule and config.schedule_epochs is None:
            config = config.replace(schedule_epochs=config.epochs)
        config = config.replace(epochs=epochs)
    if data is None:
        from sparseae.provenance import locate

        data, found = locate(ck, path, config)
        if found is not None and found != config.data:
            config = config.replace(data=found)
    return config, data


def check_same_run(run, ck, path) -> None:
    """Refuse to resume ``ck`` into ``run`` when the architecture or the data differ."""
    if list(run.arch.sizes) != list(ck.state["arch"]):
        raise CheckpointError(f"checkpoint: {path} is for architecture {ck.state['arch']}, "
                              f"not {list(run.arch.sizes)}")
    if run_fingerprint(run) != ck.state["data_sha256"]:
        raise CheckpointError(f"checkpoint: {path} was trained on other data than given")


def restore_arenas(encoder, decoder, ck, path) -> None:
    """Copy a checkpoint's arena arrays into ``encoder`` and ``decoder``.

    Refuses arrays of the wrong shape, and arenas where a pruned entry (mask
    0) holds a nonzero parameter or moment: the kernels rely on pruned weights
    being exactly 0, so such an entry would keep computing.
    """
    for half, name in ((encoder, "encoder"), (decoder, "decoder")):
        arrays = ck.arenas[name]
        for key, arr in arrays.items():
            target = getattr(half, key)
            if arr.shape != target.shape:
                raise CheckpointError(f"checkpoint: {path} {name}/{key} has shape {arr.shape}, "
                                      f"expected {target.shape}")
        dead = np.asarray(arrays["mask"]) == 0
        for key in ("params", "m", "v"):
            bad = int(np.count_nonzero(np.asarray(arrays[key])[dead]))
            if bad:
                raise CheckpointError(f"checkpoint: {path} {name}/{key} is nonzero at {bad} "
                                      "pruned entries (mask 0); a pruned entry must be 0")
        for key, arr in arrays.items():
            getattr(half, key)[...] = arr

"""Self-describing, atomically written HDF5 checkpoints.

Layout: root attributes ``format = "sparseae-checkpoint"``, integer
``format-version``, ``generated-by``, ``created`` (ISO 8601), ``kind``
(``canonical`` or ``population``), ``config`` and ``state`` (JSON strings);
one group per arena (``encoder``, ``decoder``) with datasets ``params``
(float32), ``mask`` (uint8), ``m``, ``v`` (float32), ``step`` and ``zeros``
(int64); a
``history`` group of float64 datasets; optional extra datasets.

A file is written to a temporary name in the target's folder, flushed,
fsynced, then renamed over the target with :func:`os.replace`, so a crash or
kill at any moment leaves either the old checkpoint or the new one, never a
partial file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from sparseae import _h5
from sparseae._atomic import atomic_target
from sparseae.errors import CheckpointError

FORMAT = "sparseae-checkpoint"
FORMAT_VERSION = 1
ARENA_DTYPES = {"params": np.float32, "mask": np.uint8, "m": np.float32, "v": np.float32,
                "step": np.int64, "zeros": np.int64}


@dataclass
class Checkpoint:
    """What a checkpoint holds, in memory."""

    kind: str
    config: dict
    state: dict
    arenas: dict  # name -> {"params", "mask", "m", "v", "step"}
    history: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


def save(path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (temp file, fsync, ``os.replace``).

    Raises :class:`CheckpointError` when the folder cannot be written; no
    temporary file is left behind on any error.
    """
    import h5py

    with atomic_target(path, _WriteError) as tmp:
        with h5py.File(tmp, "w") as f:
            _h5.stamp(f, FORMAT, FORMAT_VERSION)
            f.attrs["kind"] = ckpt.kind
            f.attrs["config"] = json.dumps(ckpt.config, sort_keys=True)
            f.attrs["state"] = json.dumps(ckpt.state, sort_keys=True)
            for name, arrays in ckpt.arenas.items():
                g = f.create_group(name)
                for key, dtype in ARENA_DTYPES.items():
                    g.create_dataset(key, data=np.asarray(arrays[key], dtype=dtype))
            h = f.create_group("history")
            for key, values in ckpt.history.items():
                h.create_dataset(key, data=np.asarray(values, dtype=np.float64))
            x = f.create_group("extra")
            for key, values in ckpt.extra.items():
                x.create_dataset(key, data=np.asarray(values))


class _WriteError(CheckpointError):
    def __init__(self, msg):
        super().__init__(f"checkpoint: {msg}")


def load(path) -> Checkpoint:
    """Read and validate a checkpoint.

    Raises :class:`CheckpointError` (one line) for a missing or non-HDF5
    file, a truncated file, another ``format``, a ``format-version`` newer
    than this sparseae reads, or missing parts.
    """
    f, attrs = _h5.open_checked(path, FORMAT, FORMAT_VERSION, CheckpointError, "checkpoint")
    try:
        with f:
            arenas = {}
            for name in ("encoder", "decoder"):
                if name not in f:
                    raise CheckpointError(f"checkpoint: {path} has no '{name}' group")
                g = f[name]
                arenas[name] = {k: g[k][()].astype(d, copy=False)
                                for k, d in ARENA_DTYPES.items() if k in g or k != "zeros"}
                if "zeros" not in arenas[name]:  # written before the regrowth accounting
                    arenas[name]["zeros"] = np.full(len(arenas[name]["step"]), -1, np.int64)
            history = {k: f["history"][k][()] for k in f["history"]} if "history" in f else {}
            extra = {k: f["extra"][k][()] for k in f["extra"]} if "extra" in f else {}
            return Checkpoint(kind=str(attrs["kind"]), config=json.loads(attrs["config"]),
                              state=json.loads(attrs["state"]), arenas=arenas, history=history,
                              extra=extra, attrs=attrs)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: {path} is corrupt ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


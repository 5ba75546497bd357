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
    import h5py

    f, attrs = _h5.open_checked(path, FORMAT, FORMAT_VERSION, CheckpointError, "checkpoint")

    def group(name, required=False):
        if name not in f:
            if required:
                raise CheckpointError(f"checkpoint: {path} has no '{name}' group")
            return {}
        g = f[name]
        if not isinstance(g, h5py.Group):
            raise CheckpointError(f"checkpoint: {path} '{name}' must be a group of datasets")
        out = {}
        for k, d in g.items():
            if not isinstance(d, h5py.Dataset) or not (
                    np.issubdtype(d.dtype, np.integer) or np.issubdtype(d.dtype, np.floating)):
                raise CheckpointError(f"checkpoint: {path} {name}/{k} must be a numeric dataset")
            out[k] = d[()]
        return out

    try:
        with f:
            arenas = {}
            for name in ("encoder", "decoder"):
                g = group(name, required=True)
                missing = [k for k in ARENA_DTYPES if k not in g and k != "zeros"]
                if missing:
                    raise CheckpointError(f"checkpoint: {path} {name} lacks {', '.join(missing)}")
                arenas[name] = {k: np.asarray(g[k]).astype(d, copy=False)
                                for k, d in ARENA_DTYPES.items() if k in g}
                if "zeros" not in arenas[name]:  # written before the regrowth accounting
                    arenas[name]["zeros"] = np.full(np.shape(arenas[name]["step"])[:1], -1,
                                                    np.int64)
            history = {k: np.asarray(v, np.float64) for k, v in group("history").items()}
            extra = group("extra")
            try:
                config, state = json.loads(attrs["config"]), json.loads(attrs["state"])
            except KeyError as exc:
                raise CheckpointError(f"checkpoint: {path} has no {exc} attribute") from None
            except (TypeError, ValueError):
                raise CheckpointError(f"checkpoint: {path} config or state is not valid "
                                      "JSON") from None
            return Checkpoint(kind=str(attrs.get("kind")), config=config, state=state,
                              arenas=arenas, history=history, extra=extra, attrs=attrs)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint: {path} is corrupt ({type(exc).__name__}: "
                              f"{_h5.first_line(exc) if str(exc) else ''})") from None

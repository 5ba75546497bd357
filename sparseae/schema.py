"""What sparseae reads from files, checked against one schema before it is used.

Every reader goes through here: TOML configs and sweep specs (:func:`read_toml`,
the same reader and messages for ``train --config`` and ``sweep``), checkpoints
(:func:`check_checkpoint`: state, arenas, history and extra arrays, by type,
shape and range) and the runs of a results file (:func:`read_result_run`).  A
value of the wrong type, shape or range is a one-line error naming the file and
the field, never a ``TypeError`` from deep inside a run.
"""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from sparseae.errors import CheckpointError, ConfigError, ResultsError

# ---------------------------------------------------------------------------- TOML


def read_toml(path, label: str | None = None) -> dict:
    """The tables of a TOML file; :class:`ConfigError` (one line) when it cannot be
    read, is not UTF-8 or is not valid TOML.  ``label`` prefixes the message."""
    import tomllib

    path = os.fspath(path)
    where = f"{label}: {path}" if label else path
    if not path.strip():
        raise ConfigError(f"{label or 'config'}: the file name is empty")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a folder, expected a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML (not UTF-8: {exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:  # the message names line and column
        raise ConfigError(f"{where}: invalid TOML: {' '.join(str(exc).split())}") from None


# ------------------------------------------------------------------------- checkpoints

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, (bool, np.bool_))


def _state_field(key, value, config, path):
    def bad(what):
        raise CheckpointError(f"checkpoint: {path} state.{key} {what}, got {_short(value)}")

    if key == "epoch":
        if not _is_int(value) or not 0 <= value <= config.epochs:
            bad(f"must be an integer in [0, {config.epochs}] (the run's epochs)")
    elif key in ("steps",):
        if not _is_int(value) or value < 0:
            bad("must be an integer >= 0")
    elif key in ("train_seconds", "prune_seconds", "seconds"):
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            bad("must be a number >= 0")
    elif key == "arch":
        if not isinstance(value, list) or len(value) < 2 or not all(
                _is_int(w) and w >= 1 for w in value):
            bad("must be a list of at least two positive integer widths")
    elif key == "data_sha256":
        if not isinstance(value, str) or not _HEX64.match(value):
            bad("must be a SHA-256 hex digest")
    elif key == "rng":
        try:
            if not isinstance(value, dict) or value.get("bit_generator") != "PCG64":
                raise ValueError
            np.random.PCG64().state = value
        except (TypeError, ValueError, KeyError, OverflowError):
            bad("must be the state of a PCG64 generator")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _half_size(shapes) -> int:
    return sum(i * o + o for i, o, _ in shapes)


def check_arenas(ck, path, rows: int, arch) -> None:
    """Shapes (against ``arch`` and ``rows``) and values of a checkpoint's arenas."""
    for name, shapes in (("encoder", arch.encoder_shapes()), ("decoder", arch.decoder_shapes())):
        arrays = ck.arenas.get(name)
        if not isinstance(arrays, dict):
            raise CheckpointError(f"checkpoint: {path} has no '{name}' group")
        n = _half_size(shapes)
        for key in ("params", "mask", "m", "v", "step", "zeros"):
            arr = arrays.get(key)
            where = f"checkpoint: {path} {name}/{key}"
            expected = (rows, n) if key in ("params", "mask", "m", "v") else (rows,)
            if arr is None:
                raise CheckpointError(f"{where} is missing")
            if arr.shape != expected:
                raise CheckpointError(f"{where} has shape {arr.shape}, expected {expected}")
            if key in ("params", "m", "v") and not np.isfinite(arr).all():
                raise CheckpointError(f"{where} contains NaN or inf")
            if key == "v" and (arr < 0).any():
                raise CheckpointError(f"{where} has negative entries (Adam's second moment)")
            if key == "mask" and not np.isin(arr, (0, 1)).all():
                raise CheckpointError(f"{where} has values other than 0 and 1")
            if key == "step" and (arr < 0).any():
                raise CheckpointError(f"{where} has negative Adam steps")
            if key == "zeros" and (arr < -1).any():
                raise CheckpointError(f"{where} has values below -1")


def _figure_epochs(epoch: int) -> list:
    from sparseae.metrics import figure_epoch

    return [e for e in range(epoch) if figure_epoch(e)]


def check_history(ck, path, series: dict, epoch: int) -> None:
    """``series``: name -> ``"epoch"`` (one value per epoch), ``"cells"`` (an
    ``(epoch, N)`` array, N given as ``("cells", N)``) or ``"figure"``."""
    figures = _figure_epochs(epoch)
    for key, kind in series.items():
        arr = ck.history.get(key)
        where = f"checkpoint: {path} history/{key}"
        if arr is None:
            raise CheckpointError(f"{where} is missing")
        if isinstance(kind, tuple):
            expected = (epoch, kind[1])
        elif kind == "figure":
            expected = (len(figures),)
        else:
            expected = (epoch,)
        if arr.shape != expected and not (arr.size == 0 and expected[0] == 0):
            raise CheckpointError(f"{where} has shape {arr.shape}, expected {expected}")
    if [int(x) for x in ck.history["figure_epoch"]] != figures:
        raise CheckpointError(f"checkpoint: {path} history/figure_epoch must be the epochs "
                              f"{figures[:3]}... recorded so far")


def check_checkpoint(ck, path, config, keys, resume: bool) -> None:
    """Validate a loaded checkpoint against its (validated) ``config``.

    ``keys``: the state keys the caller needs (all present keys are checked);
    ``resume``: also check the history and extra arrays a resumed run reads.
    """
    from sparseae.model import Architecture

    for key in keys:
        if key not in ck.state:
            raise CheckpointError(f"checkpoint: {path} state lacks {key}")
    for key, value in ck.state.items():
        _state_field(key, value, config, path)
    if "arch" in ck.state:
        arch = Architecture(tuple(ck.state["arch"]))
        rows = config.population if ck.kind == "population" else 1
        check_arenas(ck, path, rows, arch)
    if ck.kind == "population":
        N = config.population
        lr = ck.extra.get("cell_lr")
        order = ck.extra.get("order")
        if lr is None or order is None:
            if resume:
                raise CheckpointError(f"checkpoint: {path} lacks the cells' lr and visiting order")
        else:
            from sparseae.ring import LR_MAX, LR_MIN

            if lr.shape != (N,) or not _is_real(lr) or not np.isfinite(lr).all() or \
                    (lr < LR_MIN).any() or (lr > LR_MAX).any():
                raise CheckpointError(f"checkpoint: {path} extra/cell_lr must be {N} learning "
                                      f"rates in [{LR_MIN:g}, {LR_MAX:g}]")
            if order.shape != (N,) or not np.issubdtype(order.dtype, np.integer) or \
                    sorted(order.tolist()) != list(range(N)):
                raise CheckpointError(f"checkpoint: {path} extra/order must be a permutation "
                                      f"of the {N} cells")
    if resume:
        epoch = int(ck.state["epoch"])
        if ck.kind == "population":
            from sparseae.coevolution import CELL_SERIES, FIGURE_SERIES, POP_SERIES

            series = {k: ("cells", config.population) for k in CELL_SERIES}
            series.update({k: "epoch" for k in POP_SERIES})
            series.update({k: "figure" for k in FIGURE_SERIES})
        else:
            series = {k: "epoch" for k in ("train_loss", "lr", "pruned", "preserved")}
            series.update({"figure_epoch": "figure", "mean_l1": "figure"})
        check_history(ck, path, series, epoch)


def _is_real(arr) -> bool:
    return np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)


# ---------------------------------------------------------------------------- results

#: Summary keys that must be numbers when present (NaN allowed).
SUMMARY_NUMBERS = ("test_l1", "train_l1", "validation_l1", "mean_l1", "preserved",
                   "preserved_encoder", "preserved_decoder", "flops", "flops_dense",
                   "parameters", "epochs", "seconds")


def _json_attr(attrs, key, where, kind):
    from sparseae._h5 import text

    try:
        value = json.loads(text(attrs[key]))
    except KeyError:
        raise ResultsError(f"{where} has no '{key}' attribute") from None
    except (TypeError, ValueError, AttributeError):
        raise ResultsError(f"{where} '{key}' is not valid JSON") from None
    if not isinstance(value, kind):
        raise ResultsError(f"{where} '{key}' must be a JSON {kind.__name__ if kind is not dict else 'object'}")
    return value


def run_groups(f, path):
    """Yield the run groups of an open results file, checking the layout
    ``/runs/<variant>/<trial>`` (groups only)."""
    import h5py

    runs = f.get("runs")
    if runs is None:
        return
    if not isinstance(runs, h5py.Group):
        raise ResultsError(f"results: {path} /runs must be a group")
    for vname, g in runs.items():
        if not isinstance(g, h5py.Group):
            raise ResultsError(f"results: {path} /runs/{vname} must be a group (one per variant)")
        for tname, r in g.items():
            if not isinstance(r, h5py.Group):
                raise ResultsError(f"results: {path} /runs/{vname}/{tname} must be a group "
                                   "(one per run)")
            yield r


def read_result_run(r, path, history: bool = True) -> dict:
    """One run group of a results file as a dict, every field checked."""
    import h5py

    from sparseae._h5 import text

    where = f"results: {path} {r.name}"
    a = r.attrs
    variant = text(a.get("variant"))
    if not isinstance(variant, str) or not variant:
        raise ResultsError(f"{where} 'variant' must be a non-empty string")
    values = {}
    for key in ("trial", "seed"):
        v = a.get(key)
        if not _is_int(v) or v < 0:
            raise ResultsError(f"{where} '{key}' must be an integer >= 0, got {_short(v)}")
        values[key] = int(v)
    seconds = a.get("seconds")
    if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise ResultsError(f"{where} 'seconds' must be a number >= 0, got {_short(seconds)}")
    cpu = a.get("cpu_seconds")
    if cpu is not None and (not _is_number(cpu) or not math.isfinite(cpu) or cpu < 0):
        raise ResultsError(f"{where} 'cpu_seconds' must be a number >= 0, got {_short(cpu)}")
    config = _json_attr(a, "config", where, dict)
    summary = _json_attr(a, "summary", where, dict)
    for key in SUMMARY_NUMBERS:
        if key in summary and not _is_number(summary[key]):
            raise ResultsError(f"{where} summary '{key}' must be a number, got "
                               f"{_short(summary[key])}")
    out = {"variant": variant, "trial": values["trial"], "seed": values["seed"],
           "config": config, "summary": summary, "seconds": float(seconds)}
    if cpu is not None:
        out["cpu_seconds"] = float(cpu)
    hist = {}
    for k, d in r.items():
        if not isinstance(d, h5py.Dataset) or not _is_real(d):
            raise ResultsError(f"{where}/{k} must be a numeric dataset (a history series)")
        if history:
            hist[k] = d[()]
    if history:
        out["history"] = hist
    return out

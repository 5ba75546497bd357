"""A run's per-epoch history as CSV (``sparseae train --history FILE.csv``).

One row per epoch done: ``epoch`` (0-based), then every per-epoch series of the
run (canonical: ``train_loss``, ``lr``, ``pruned``, ``preserved``; Lipi-AE-S: the
population series, then every per-cell series as ``name[k]`` for cell k), and
``mean_l1`` (the figures' metric) on the epochs where it was recorded, empty
elsewhere.  Written atomically.
"""

from __future__ import annotations

import csv

import numpy as np

from sparseae._atomic import atomic_target
from sparseae.errors import SparseaeError


class HistoryError(SparseaeError):
    def __init__(self, msg):
        super().__init__(f"history: {msg}")


def columns(run) -> tuple:
    """``(header, rows)`` of ``run.history``."""
    h = run.history
    n = run.epoch
    header, cols = ["epoch"], [list(range(n))]
    for key, values in h.items():
        if key in ("figure_epoch", "mean_l1"):
            continue
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 2:  # (epochs, cells)
            for k in range(arr.shape[1]):
                header.append(f"{key}[{k}]")
                cols.append(arr[:, k].tolist())
        else:
            header.append(key)
            cols.append(arr.tolist())
    figure = dict(zip((int(e) for e in h.get("figure_epoch", [])), h.get("mean_l1", [])))
    header.append("mean_l1")
    cols.append([figure.get(e, "") for e in range(n)])
    rows = [[_fmt(col[i]) if i < len(col) else "" for col in cols] for i in range(n)]
    return header, rows


def _fmt(x):
    if isinstance(x, float):
        return int(x) if x.is_integer() and abs(x) < 2 ** 53 else repr(x)
    return x


def write_csv(run, path) -> None:
    """Write ``run``'s history to ``path`` (CSV, atomically)."""
    header, rows = columns(run)
    with atomic_target(path, HistoryError) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

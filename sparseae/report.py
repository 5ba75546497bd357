"""Read a sweep's results file, tabulate it per variant, test against a baseline, plot.

:func:`load_results` returns one dict per run; :func:`summarize` returns one
row per variant: the number of runs, median and IQR (75th - 25th percentile,
numpy's linear interpolation) of the final test L1, medians of ``mean_l1``
(the mean training-set L1 of the centres, the paper's figure metric), of the
preserved fractions, FLOPs and run seconds, and two-sided Mann-Whitney U
p-values (:func:`scipy.stats.mannwhitneyu`) of the variant's final test L1
and mean_l1 against the baseline variant's.  scipy and matplotlib are
imported only inside the functions that need them.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from sparseae._atomic import atomic_target
from sparseae.errors import SparseaeError
from sparseae.schema import read_result_run, run_groups
from sparseae._h5 import text as _text
from sparseae.errors import ResultsError
from sparseae.sweep.results import open_results

#: The summary keys whose median the table reports (besides test_l1's IQR).
MEDIAN_KEYS = ("mean_l1", "preserved", "preserved_encoder", "preserved_decoder", "flops")
#: Columns of the printed table: (row key, header, format).
COLUMNS = (
    ("n", "n", "{:d}"),
    ("test_l1_median", "test_l1", "{:.4f}"),
    ("test_l1_iqr", "IQR", "{:.4f}"),
    ("mean_l1_median", "mean_l1", "{:.4f}"),
    ("preserved_median", "preserved", "{:.3f}"),
    ("preserved_encoder_median", "enc", "{:.3f}"),
    ("preserved_decoder_median", "dec", "{:.3f}"),
    ("flops_median", "flops", "{:.0f}"),
    ("seconds_median", "seconds", "{:.3g}"),
    ("p_test_l1", "p(test_l1)", "{:.3g}"),
    ("p_mean_l1", "p(mean_l1)", "{:.3g}"),
)


class PlotUnavailable(SparseaeError):
    """matplotlib is not installed (the optional ``plot`` extra)."""


def load_results(path) -> list:
    """Every run of a results file, in the sweep's variant order, then trial.

    Each item is a dict with ``variant``, ``trial``, ``seed``, ``config``,
    ``summary`` (dicts), ``seconds`` (and ``cpu_seconds`` where recorded) and ``history``
    (name -> float64 array, per-cell series 2-D ``(epochs, N)``).  Raises :class:`ResultsError` (one
    line) for a missing file, another format, a newer format-version or a
    corrupt file.
    """
    path = os.fspath(path)
    f = open_results(path)
    out = []
    try:
        with f:
            try:
                order = [item[0] for item in json.loads(_text(f.attrs["variants"]))
                         if isinstance(item, list) and item and isinstance(item[0], str)]
            except (KeyError, ValueError, TypeError):
                order = []
            for r in run_groups(f, path):
                out.append(read_result_run(r, path))
    except ResultsError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ResultsError(f"results: {path} is corrupt ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    rank = {n: i for i, n in enumerate(order)}
    out.sort(key=lambda r: (rank.get(r["variant"], len(rank)), r["variant"], r["trial"]))
    return out


def variants(results) -> list:
    """Variant names in the order they first appear in ``results``."""
    seen = []
    for r in results:
        if r["variant"] not in seen:
            seen.append(r["variant"])
    return seen


def _values(runs, key):
    return np.array([float(r["summary"].get(key, np.nan)) for r in runs], dtype=np.float64)


def _p_value(x, y):
    from scipy.stats import mannwhitneyu

    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if len(x) == 0 or len(y) == 0:
        return None
    p = float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return None if math.isnan(p) else p


def summarize(results, baseline: str | None = None) -> list:
    """One row (dict) per variant; ``baseline`` (default: the first variant) is the
    reference of the Mann-Whitney tests (its own p-values are None)."""
    names = variants(results)
    if not names:
        raise ResultsError("results: the file holds no finished runs")
    baseline = names[0] if baseline is None else baseline
    if baseline not in names:
        raise ResultsError(f"baseline: no variant named {baseline!r}; the variants are "
                           f"{', '.join(map(repr, names))}")
    by = {n: [r for r in results if r["variant"] == n] for n in names}
    base_test, base_mean = _values(by[baseline], "test_l1"), _values(by[baseline], "mean_l1")
    rows = []
    for n in names:
        runs = by[n]
        test = _values(runs, "test_l1")
        q25, q50, q75 = np.percentile(test, [25, 50, 75])
        row = {"variant": n, "n": len(runs), "baseline": n == baseline,
               "test_l1_median": float(q50), "test_l1_q25": float(q25),
               "test_l1_q75": float(q75), "test_l1_iqr": float(q75 - q25)}
        for key in MEDIAN_KEYS:
            row[f"{key}_median"] = float(np.median(_values(runs, key)))
        row["seconds_median"] = float(np.median([r["seconds"] for r in runs]))
        if n == baseline:
            row["p_test_l1"] = row["p_mean_l1"] = None
        else:
            row["p_test_l1"] = _p_value(test, base_test)
            row["p_mean_l1"] = _p_value(_values(runs, "mean_l1"), base_mean)
        rows.append(row)
    return rows


def format_table(rows) -> str:
    """The rows as a fixed-width text table (``-`` for a missing p-value)."""
    head = ["variant"] + [h for _, h, _ in COLUMNS]
    body = []
    for row in rows:
        cells = [row["variant"] + (" *" if row.get("baseline") else "")]
        for key, _, fmt in COLUMNS:
            v = row.get(key)
            cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v))
                         else fmt.format(v))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    lines = []
    for r in [head] + body:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    lines.append("* baseline of the two-sided Mann-Whitney U tests")
    return "\n".join(lines)


def write_csv(rows, path) -> None:
    """Write the rows (all keys, one line per variant) to ``path`` atomically."""
    with atomic_target(path, _CsvError) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for row in rows:
                w.writerow({k: "" if v is None else v for k, v in row.items()})


class _CsvError(ResultsError):
    def __init__(self, msg):
        super().__init__(f"csv: {msg}")


def loss_series(run: dict) -> np.ndarray:
    """A run's per-epoch L1: Lipi-AE-S's best replacement loss, canonical's train loss."""
    h = run["history"]
    for key in ("best_replacement_loss", "train_loss"):
        if key in h:
            return np.asarray(h[key], dtype=np.float64)
    return np.zeros(0)


def require_matplotlib():
    """Import matplotlib with the Agg backend or raise :class:`PlotUnavailable`."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("plot: matplotlib is not installed; "
                              "pip install 'sparseae[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results, path) -> None:
    """Write a PNG: (a) median over trials of the L1 per epoch for every variant (with
    the figure metric ``mean_l1`` as markers), (b) box plots of the preserved fractions."""
    plt = require_matplotlib()
    names = variants(results)
    if not names:
        raise ResultsError("results: the file holds no finished runs")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    for i, n in enumerate(names):
        runs = [r for r in results if r["variant"] == n]
        series = [loss_series(r) for r in runs]
        length = min(len(s) for s in series)
        color = f"C{i % 10}"
        if length:
            med = np.median(np.stack([s[:length] for s in series]), axis=0)
            ax1.plot(np.arange(1, length + 1), med, color=color, label=n)
        fig_pts = [(np.asarray(r["history"]["figure_epoch"]), np.asarray(r["history"]["mean_l1"]))
                   for r in runs if "figure_epoch" in r["history"] and "mean_l1" in r["history"]]
        if fig_pts:
            k = min(len(e) for e, _ in fig_pts)
            if k:
                ax1.plot(fig_pts[0][0][:k] + 1, np.median(np.stack([m[:k] for _, m in fig_pts]), 0),
                         "o", color=color, markersize=5)
    from matplotlib.ticker import MaxNLocator

    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("L1 (median over trials)")
    ax1.set_title("L1 per epoch (lines) and mean_l1 of the centres (dots)")
    ax1.legend(fontsize="small")
    data = [[float(r["summary"].get("preserved", np.nan)) for r in results if r["variant"] == n]
            for n in names]
    ax2.boxplot(data)
    ax2.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize="small")
    ax2.set_ylabel("preserved fraction")
    ax2.set_title("preserved weights (final)")
    fig.tight_layout()
    with atomic_target(path, _PlotError) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


class _PlotError(ResultsError):
    def __init__(self, msg):
        super().__init__(f"plot: {msg}")

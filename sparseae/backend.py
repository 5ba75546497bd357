"""Pick the kernels for a device: ``cpu`` (numba.njit) or ``cuda`` (numba.cuda).

:func:`get` returns a small :class:`Backend` object that dispatches every
kernel family the library uses -- training, evaluation, all-pairs L1 and the
CONJUNCTIVE marks -- so that ``device="cuda"`` runs all of them on the GPU.
``import sparseae`` never imports numba.cuda; asking for ``cuda`` where no
usable GPU exists is one :class:`~sparseae.errors.ConfigError` line.
"""

from __future__ import annotations

import numpy as np

from sparseae.errors import ConfigError

DEVICES = ("cpu", "cuda")
#: Rows forwarded together when the CPU evaluates a pair over a whole split.
EVAL_CHUNK = 256


def kernels(device: str = "cpu"):
    """The kernel module for ``device`` (``sparseae.kernels.cpu`` or ``.cuda``)."""
    if device == "cpu":
        from sparseae.kernels import cpu

        return cpu
    if device == "cuda":
        from sparseae.kernels import cuda

        ok, why = cuda.available()
        if not ok:
            raise ConfigError(f"device: cuda is not usable here ({why}); use --device cpu")
        return cuda
    raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")


def adam_config(config):
    """The kernels' :class:`~sparseae.kernels.contract.AdamConfig` of a run config."""
    from sparseae.kernels.contract import AdamConfig

    return AdamConfig(float(config.beta1), float(config.beta2), float(config.eps),
                      config.adam == "fresh")


class Backend:
    """The kernel families of one device, with one calling convention.

    Pairs are rows of an encoder and a decoder :class:`~sparseae.model.Arena`
    (or their parameter arrays); every method returns numpy arrays.
    """

    def __init__(self, device: str):
        self.device = device
        self.k = kernels(device)

    def train(self, enc, dec, rows: range, X, orders, lrs, batch_size, adam, stats,
              with_stats) -> np.ndarray:
        """One epoch of the pairs in ``rows`` (a contiguous range of arena rows);
        ``orders`` ``(len(rows), n)``, ``lrs`` one per row, ``stats`` a pair of
        ``(len(rows), units, 3)`` arrays.  Returns every pair's mean batch L1."""
        lo, hi = rows.start, rows.stop
        if self.device == "cpu" and hi - lo == 1:
            return np.array([self.k.train_epoch(
                enc.half(lo), dec.half(lo), X, orders[0], batch_size, float(lrs[0]), adam,
                (stats[0][0], stats[1][0]), with_stats)])
        return np.asarray(self.k.train_epoch_many(
            enc.half(slice(lo, hi)), dec.half(slice(lo, hi)), X, np.ascontiguousarray(orders),
            batch_size, np.asarray(lrs, np.float64), adam, stats, with_stats), np.float64)

    def evaluate(self, PE, le, PD, ld, X) -> np.ndarray:
        """``(P,)`` mean L1 over the rows of ``X`` of encoder row ``p`` of ``PE``
        with decoder row ``p`` of ``PD``."""
        if self.device == "cpu":
            return np.array([self.k.evaluate_l1(PE[p], le, PD[p], ld, X, EVAL_CHUNK)
                             for p in range(PE.shape[0])])
        return np.asarray(self.k.evaluate_l1_many(PE, le, PD, ld, X), np.float64)

    def all_pairs(self, PE, le, PD, ld, Xb) -> np.ndarray:
        """``(E, D)`` mean L1 of every encoder row with every decoder row on ``Xb``."""
        return np.asarray(self.k.all_pairs_l1(PE, le, PD, ld, Xb), np.float64)

    def pairs(self, PE, le, PD, ld, X, enc, dec, rows, chunk) -> np.ndarray:
        """``(Q, E, D)``: for every ``q`` the mean L1 of encoder rows ``enc[q]`` of
        ``PE`` with decoder rows ``dec[q]`` of ``PD`` on the rows ``rows[q]`` of
        ``X`` (forwarded ``chunk`` at a time) -- many runs' neighbourhood,
        replacement or population evaluations in one call."""
        enc, dec, rows = (np.ascontiguousarray(a, np.int64) for a in (enc, dec, rows))
        return np.asarray(self.k.pairs_l1_many(PE, le, PD, ld, X, enc, dec, rows, int(chunk)),
                          np.float64)

    def population_stats(self, params, masks, n: int):
        """``(d2, overlaps)``, each ``(R, n, n)``: for the ``n`` consecutive rows of
        each of ``R`` populations, the squared L2 distances of the parameters and
        the counts of entries live in both masks."""
        d2, ov = self.k.population_stats_many(params, masks, int(n))
        return np.asarray(d2, np.float64), np.asarray(ov, np.int64)

    def conjunctive(self, pe, le, pd, ld, X, threshold):
        """CONJUNCTIVE marks ``(marks_e, marks_d)`` of one pair over the rows of ``X``."""
        if self.device == "cpu":
            return self.k.conjunctive_marks(pe, le, pd, ld, X, threshold)
        me, md = self.k.conjunctive_marks_many(pe[None], le, pd[None], ld, X, threshold)
        return me[0], md[0]


_BACKENDS: dict = {}


def get(device: str = "cpu") -> Backend:
    """The :class:`Backend` of ``device`` (one per process)."""
    if device not in _BACKENDS:
        _BACKENDS[device] = Backend(device)
    return _BACKENDS[device]

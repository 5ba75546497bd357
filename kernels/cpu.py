"""Numba CPU kernels for masked dense autoencoders (float32): the entry points.

The contract (data layout, argument bundles, shared scalar math) is in
``kernels/contract.py``; the layers, Adam and the loss these entry points
are made of are in ``kernels/cpu_layers.py``; ``kernels/cuda.py`` offers the
same functions batched over networks on a GPU.

* :func:`train_epoch` / :func:`train_epoch_many` -- one epoch of one pair /
  of ``P`` pairs (numba's parallel loop over the cores);
* :func:`forward_half`, :func:`evaluate_l1`, :func:`all_pairs_l1` --
  evaluation; :func:`pairs_l1_many` -- many all-pairs evaluations at once;
* :func:`conjunctive_marks` -- the CONJUNCTIVE marking pass;
* :func:`pairwise_sq_l2`, :func:`mask_overlaps`, :func:`population_stats_many` --
  population diversity.

Every entry point runs with FTZ/DAZ set and restores the caller's
floating-point state (``kernels/fpenv.py``), and only entry points are cached
on disk (``kernels/cpu_layers.py`` says why).
"""

import numpy as np
from numba import njit, prange

from sparseae._options import COL_IN, COL_OUT, FASTMATH
from sparseae.kernels import fpenv
from sparseae.kernels.contract import AdamConfig, Half
from sparseae.kernels.cpu_layers import (
    EXACT,
    HELPER,
    JIT,
    abs_sum,
    adam_update,
    buffer_offsets,
    conj_done,
    half_backward,
    half_forward,
    l1_loss_grad,
    max_width,
    n_units,
    no_fusion,
)

_F = np.float32

__all__ = ["AdamConfig", "Half", "all_pairs_l1", "conjunctive_marks", "evaluate_l1",
           "forward_half", "mask_overlaps", "pairs_l1_many", "pairwise_sq_l2",
           "population_stats_many", "prepare", "train_epoch", "train_epoch_many"]


# ------------------------------------------------------------------- training


@njit(**JIT)
def train_epoch(enc, dec, X, order, batch_size, lr, adam, stats, with_stats):
    """Train one encoder/decoder pair for one epoch; return the mean batch L1.

    ``enc``, ``dec``: :class:`~sparseae.kernels.contract.Half` bundles of one
    row each; ``X`` ``(N, D)`` float32; batches are consecutive slices of
    ``order`` (indices into ``X``), the last one possibly shorter; ``lr`` the
    learning rate; ``adam`` an :class:`~sparseae.kernels.contract.AdamConfig`;
    ``stats = (stats_e, stats_d)`` ``(units, 3)`` float64, into which the
    fused per-unit pre-activation statistics of every training forward pass
    are accumulated when ``with_stats``.  Each step: forward, L1 loss,
    backward, masked Adam on both halves.
    """
    old = fpenv.enter()
    loss = _train_epoch(enc, dec, X, order, batch_size, lr, adam, stats, with_stats)
    fpenv.leave(old)
    return loss


@njit(**HELPER)
def _train_epoch(enc, dec, X, order, batch_size, lr, adam, stats, with_stats):
    le, ld = enc.layers, dec.layers
    n = order.shape[0]
    D = X.shape[1]
    Bm = min(batch_size, n)
    hoff_e = buffer_offsets(le, Bm)
    hoff_d = buffer_offsets(ld, Bm)
    hbuf_e = np.empty(hoff_e[-1], np.float32)
    hbuf_d = np.empty(hoff_d[-1], np.float32)
    mw = max(max_width(le), max_width(ld))
    work = np.empty(2 * Bm * mw, np.float32)
    xb = np.empty(Bm * D, np.float32)
    dy = np.empty(Bm * D, np.float32)
    dcode_buf = np.empty(Bm * ld[0, COL_IN], np.float32)
    ge = np.empty_like(enc.params)
    gd = np.empty_like(dec.params)
    fe = no_fusion(le)
    fd = no_fusion(ld)
    fused_e = (stats[0], fe[1], fe[2], with_stats, False, 0.0)
    fused_d = (stats[1], fd[1], fd[2], with_stats, False, 0.0)
    scratch = np.empty(mw, np.int32)
    if adam.fresh:  # a new Adam every step: the moments stay 0 (written once, not per step)
        for h in (enc, dec):
            h.adam_m[:] = _F(0.0)
            h.adam_v[:] = _F(0.0)
    total = 0.0
    nb = 0
    for start in range(0, n, batch_size):
        B = min(batch_size, n - start)
        for b in range(B):
            r = order[start + b]
            for j in range(D):
                xb[b * D + j] = X[r, j]
        x = xb[:B * D]
        code = half_forward(enc.params, le, x, B, hbuf_e, hoff_e, fused_e, scratch)
        y = half_forward(dec.params, ld, code, B, hbuf_d, hoff_d, fused_d, scratch)
        total += l1_loss_grad(y, x, dy, B * D, 1.0 / (B * D))
        nb += 1
        dcode = half_backward(dec.params, ld, code, B, hbuf_d, hoff_d, dy[:B * D], gd, work,
                              True)
        # the decoder's dx lives in ``work``; move it before the encoder reuses it
        dc = dcode_buf[:dcode.shape[0]]
        dc[:] = dcode
        half_backward(enc.params, le, x, B, hbuf_e, hoff_e, dc, ge, work, False)
        adam_update(enc.params, ge, enc.mask, enc.adam_m, enc.adam_v, enc.step, lr, adam)
        adam_update(dec.params, gd, dec.mask, dec.adam_m, dec.adam_v, dec.step, lr, adam)
    return total / nb


@njit(**HELPER)
def _row(h, p):
    """Row ``p`` of a ``P``-row :class:`Half` as a one-row bundle."""
    return Half(h.params[p], h.mask[p], h.adam_m[p], h.adam_v[p], h.step[p:p + 1], h.layers)


@njit(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy", parallel=True)
def _train_epoch_many(enc, dec, X, orders, batch_size, lrs, adam, stats, with_stats):
    P = enc.params.shape[0]
    out = np.empty(P, np.float64)
    for p in prange(P):
        old = fpenv.enter()  # MXCSR is per thread: set in the worker that runs p
        out[p] = _train_epoch(_row(enc, p), _row(dec, p), X, orders[p], batch_size, lrs[p],
                              adam, (stats[0][p], stats[1][p]), with_stats)
        fpenv.leave(old)
    return out


def train_epoch_many(enc, dec, X, orders, batch_size, lrs, adam, stats, with_stats):
    """:func:`train_epoch` for ``P`` independent pairs: ``enc``/``dec`` hold
    ``P`` rows, ``orders`` is ``(P, n)``, ``lrs`` ``(P,)``, ``stats`` a pair
    of ``(P, units, 3)`` arrays.  Spread over the cores with numba's parallel
    loop; the same contract as ``kernels.cuda.train_epoch_many``.  Returns the
    ``(P,)`` mean batch L1 of every pair; each pair's result equals a
    :func:`train_epoch` call on its own."""
    return _train_epoch_many(enc, dec, X, orders, batch_size, np.asarray(lrs, np.float64),
                             AdamConfig(*adam), stats, with_stats)


# ------------------------------------------------------------------ evaluation


@njit(**JIT)
def forward_half(p, lay, X, chunk):
    """Outputs of one half (parameter row ``p``, layer table ``lay``) for every
    row of ``X`` (``(N, n_in)``), as ``(N, n_out)``; ``chunk`` rows at a time."""
    old = fpenv.enter()
    Y = _forward_half(p, lay, X, chunk)
    fpenv.leave(old)
    return Y


@njit(**HELPER)
def _forward_half(p, lay, X, chunk):
    N = X.shape[0]
    n_out = lay[lay.shape[0] - 1, COL_OUT]
    n_in = lay[0, COL_IN]
    Y = np.empty((N, n_out), np.float32)
    Bm = min(chunk, N)
    hoff = buffer_offsets(lay, Bm)
    hbuf = np.empty(hoff[-1], np.float32)
    xb = np.empty(Bm * n_in, np.float32)
    fused = no_fusion(lay)
    scratch = np.empty(max_width(lay), np.int32)
    for start in range(0, N, chunk):
        B = min(chunk, N - start)
        for b in range(B):
            for j in range(n_in):
                xb[b * n_in + j] = X[start + b, j]
        y = half_forward(p, lay, xb[:B * n_in], B, hbuf, hoff, fused, scratch)
        for b in range(B):
            for j in range(n_out):
                Y[start + b, j] = y[b * n_out + j]
    return Y


@njit(**EXACT)  # rows summed in order, the same in every compilation context
def _mean_l1(Y, X):
    N, D = X.shape
    total = 0.0
    for r in range(N):
        total += abs_sum(Y[r], X[r], D)
    return total / (N * D)


@njit(**JIT)
def evaluate_l1(pe, le, pd, ld, X, chunk):
    """Mean absolute reconstruction error of one pair (encoder row ``pe`` with
    table ``le``, decoder row ``pd`` with ``ld``) over all rows of ``X``."""
    old = fpenv.enter()
    out = _mean_l1(_forward_half(pd, ld, _forward_half(pe, le, X, chunk), chunk), X)
    fpenv.leave(old)
    return out


@njit(**HELPER)
def _pairs_l1(PE, le, PD, ld, X, enc, dec, rows, chunk, out):
    """``out[i, j]``: the mean L1 of encoder row ``enc[i]`` of ``PE`` with decoder
    row ``dec[j]`` of ``PD`` on the rows ``rows`` of ``X`` (forwarded ``chunk`` at
    a time); each encoder's codes are computed once."""
    B = rows.shape[0]
    Xb = np.empty((B, X.shape[1]), np.float32)
    for b in range(B):
        Xb[b] = X[rows[b]]
    codes = np.empty((enc.shape[0], B, ld[0, COL_IN]), np.float32)
    for i in range(enc.shape[0]):
        codes[i] = _forward_half(PE[enc[i]], le, Xb, chunk)
    for i in range(enc.shape[0]):
        for j in range(dec.shape[0]):
            out[i, j] = _mean_l1(_forward_half(PD[dec[j]], ld, codes[i], chunk), Xb)


@njit(**JIT)
def all_pairs_l1(PE, le, PD, ld, Xb):
    """``(E, D)`` matrix of the L1 of every encoder row of ``PE`` with every
    decoder row of ``PD`` on one batch ``Xb``."""
    old = fpenv.enter()
    out = np.empty((PE.shape[0], PD.shape[0]), np.float64)
    N = Xb.shape[0]
    _pairs_l1(PE, le, PD, ld, Xb, np.arange(PE.shape[0]), np.arange(PD.shape[0]),
              np.arange(N), N, out)
    fpenv.leave(old)
    return out


@njit(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy", parallel=True)
def pairs_l1_many(PE, le, PD, ld, X, enc, dec, rows, chunk):
    """``(Q, E, D)``: for every ``q``, the L1 of encoder rows ``enc[q]`` with
    decoder rows ``dec[q]`` on the rows ``rows[q]`` of ``X`` -- ``Q`` all-pairs
    evaluations (the neighbourhoods or replacement pairs of many runs, or the
    centres of a population on their training split) in one call, spread over
    the cores.  Entry ``q`` equals :func:`all_pairs_l1` of those rows on
    ``X[rows[q]]`` when ``chunk`` is the batch size."""
    Q = enc.shape[0]
    out = np.empty((Q, enc.shape[1], dec.shape[1]), np.float64)
    for q in prange(Q):
        old = fpenv.enter()
        _pairs_l1(PE, le, PD, ld, X, enc[q], dec[q], rows[q], chunk, out[q])
        fpenv.leave(old)
    return out


@njit(**JIT)
def conjunctive_marks(pe, le, pd, ld, X, threshold):
    """CONJUNCTIVE marks of a pair over the held-out rows of ``X``, in order.

    Each sample is forwarded alone; every layer's marks are ANDed with the
    early-stop rule (``cpu_layers.conjunctive_update``).  Once every layer of
    a half has stopped, that half is no longer forwarded (the encoder still is
    while the decoder needs codes), and once both have, the remaining samples
    are skipped: they could not change a mark.  Returns ``(marks_e,
    marks_d)``: one uint8 per unit (1 = inactive on every considered sample).
    """
    old = fpenv.enter()
    D = X.shape[1]
    hoff_e = buffer_offsets(le, 1)
    hoff_d = buffer_offsets(ld, 1)
    hbuf_e = np.empty(hoff_e[-1], np.float32)
    hbuf_d = np.empty(hoff_d[-1], np.float32)
    marks_e = np.zeros(n_units(le), np.uint8)
    marks_d = np.zeros(n_units(ld), np.uint8)
    cs_e = np.zeros((le.shape[0], 3), np.int64)
    cs_d = np.zeros((ld.shape[0], 3), np.int64)
    stats = np.zeros((1, 3), np.float64)
    scratch = np.empty(max(max_width(le), max_width(ld)), np.int32)
    x = np.empty(D, np.float32)
    for r in range(X.shape[0]):
        done_e = conj_done(cs_e)
        done_d = conj_done(cs_d)
        if done_e and done_d:
            break
        for j in range(D):
            x[j] = X[r, j]
        code = half_forward(pe, le, x, 1, hbuf_e, hoff_e,
                            (stats, marks_e, cs_e, False, not done_e, threshold), scratch)
        if not done_d:
            half_forward(pd, ld, code, 1, hbuf_d, hoff_d,
                         (stats, marks_d, cs_d, False, True, threshold), scratch)
    fpenv.leave(old)
    return marks_e, marks_d


@njit(**EXACT)
def _sq_l2(rows, out):
    """``out[i, j]``: squared L2 distance of rows ``i`` and ``j`` (float64
    differences, 8 lanes summed in a fixed order)."""
    n, k = rows.shape
    acc = np.zeros(8, np.float64)
    full = k - k % 8
    for i in range(n):
        out[i, i] = 0.0
        for j in range(i + 1, n):
            acc[:] = 0.0
            for t in range(0, full, 8):
                for lane in range(8):
                    d = np.float64(rows[i, t + lane]) - np.float64(rows[j, t + lane])
                    acc[lane] += d * d
            s = 0.0
            for t in range(full, k):
                d = np.float64(rows[i, t]) - np.float64(rows[j, t])
                s += d * d
            for lane in range(8):
                s += acc[lane]
            out[i, j] = s
            out[j, i] = s


@njit(**EXACT)
def _overlaps(masks, out):
    """``out[i, j]``: entries live in both rows ``i`` and ``j`` of ``masks``."""
    n, k = masks.shape
    for i in range(n):
        for j in range(i, n):
            c = 0
            for t in range(k):
                c += (masks[i, t] != 0) & (masks[j, t] != 0)
            out[i, j] = c
            out[j, i] = c


@njit(**dict(EXACT, cache=True))
def pairwise_sq_l2(rows):
    """``(n, n)`` float64 squared L2 distances between the rows of ``rows``.

    Each difference is taken in float64 and squared there, so a distance is
    accurate to float64 rounding whatever the rows' norms (a Gram matrix in
    float32 lost up to 4e-5 of it to cancellation).  The sums run in a fixed
    order (8 lanes), the same in every process.
    """
    old = fpenv.enter()
    out = np.zeros((rows.shape[0], rows.shape[0]), np.float64)
    _sq_l2(rows, out)
    fpenv.leave(old)
    return out


@njit(**dict(EXACT, cache=True))
def mask_overlaps(masks):
    """``(n, n)`` int64 counts of the entries live (nonzero) in both of two rows
    of the uint8 ``masks``; the diagonal holds each row's live count.  Exact,
    single-threaded (no BLAS)."""
    out = np.zeros((masks.shape[0], masks.shape[0]), np.int64)
    _overlaps(masks, out)
    return out


@njit(cache=True, fastmath={"nsz", "contract"}, nogil=True, error_model="numpy", parallel=True)
def population_stats_many(params, masks, n):
    """For every run ``r`` whose ``n`` centres are rows ``r*n .. r*n+n-1``: the
    ``(n, n)`` squared L2 distances of their parameters and the live-entry
    overlaps of their masks (``(R, n, n)`` each), spread over the cores."""
    R = params.shape[0] // n
    d2 = np.zeros((R, n, n), np.float64)
    ov = np.zeros((R, n, n), np.int64)
    for r in prange(R):
        old = fpenv.enter()
        _sq_l2(params[r * n:(r + 1) * n], d2[r])
        _overlaps(masks[r * n:(r + 1) * n], ov[r])
        fpenv.leave(old)
    return d2, ov


def prepare() -> float:
    """Compile (or load from the cache) every kernel training and evaluation use.

    Returns the seconds it took.  Call it before timing anything; the library
    calls it before a run so that ``us_per_step`` measures training alone.
    """
    import time

    from sparseae.model import Arena, Architecture

    t0 = time.perf_counter()
    arch = Architecture((3, 2))
    e = Arena(arch.encoder_shapes())
    d = Arena(arch.decoder_shapes())
    X = np.zeros((2, 3), np.float32)
    order = np.arange(2, dtype=np.int64)
    stats = (np.zeros((e.n_units, 3)), np.zeros((d.n_units, 3)))
    train_epoch(e.half(0), d.half(0), X, order, 1, 1e-3, AdamConfig(0.5, 0.999, 1e-8, False),
                stats, False)
    evaluate_l1(e.params[0], e.table, d.params[0], d.table, X, 2)
    forward_half(e.params[0], e.table, X, 2)
    all_pairs_l1(e.params, e.table, d.params, d.table, X)
    conjunctive_marks(e.params[0], e.table, d.params[0], d.table, X, 0.1)
    return time.perf_counter() - t0

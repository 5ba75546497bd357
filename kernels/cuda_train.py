"""The CUDA training kernel: one thread block trains one encoder/decoder pair
for a whole epoch.

Plain Python functions, specialised and compiled by ``kernels/cuda_build.py``
like the device functions of ``kernels/cuda_device.py`` they call; the host
side is ``kernels/cuda.py`` (``_TrainPlan``).

Design (training)
-----------------
One thread block (``TPB_TRAIN`` = 256 threads) owns one network pair for the
whole epoch and loops over its batches; the grid is ``P`` blocks.  The batch,
every layer's activations and dLoss/dz live in shared memory (``B x width``
floats each: 43.8 KB for the default architecture at batch 5); the weights and
Adam state are read from and written to global memory.  Each step:

* forward, layer by layer, in two barrier-separated passes: the
  pre-activations (a layer stored ``(out, in)``: one storage row per warp,
  lanes along the contiguous input axis, warp-shuffle sum; a layer stored
  ``(in, out)``: one output column per thread, ``ROW_UNROLL`` weight rows per
  memory round trip), each weight read once for all ``B`` samples; then a
  per-unit pass (a thread per unit, samples in order) for the fused VARIANCE
  statistics, the activation and, on the output layer, the sigmoid, the L1
  loss and dLoss/dz in place.
* backward + Adam, fused, last layer first: one warp per storage row, each
  lane ``UNROLL`` columns per round trip; every weight's ``w, m, v, mask``
  are read once (all loads of a round trip issued first), the gradient
  ``sum_b rowval[b] * colval[b, c]`` is formed in registers from shared
  memory, Adam is applied and ``w, m, v`` are written once.  dLoss/dx of a
  layer stored ``(in, out)`` is accumulated from the *old* weights in the same
  pass (warp-shuffle sum per row); for a layer stored ``(out, in)`` (small
  hidden layers in practice) it is a column pass before the update.  The first
  encoder layer's update also forms the *next* batch's pre-activations from
  the freshly updated weights (the next batch is prefetched into the buffer
  dLoss/dy used), so that layer is read once per step, not twice.  Biases of
  ``(out, in)`` layers are updated by their row's warp, the others by a
  column pass.  The update loop is specialised at compile time (bias, dx,
  fused forward, fresh Adam).
* Adam's per-step constants (step size, ``1 / sqrt(1 - beta2**t)``) of every
  pair are computed on the host in float64 exactly as ``cpu.adam_update``
  does and read from a small table; per-thread loss partials are summed in
  float64.

A short last batch is computed with the missing samples as zero rows whose
dLoss/dz is exactly 0, which adds exact zeros to every gradient sum.

Performance notes: the kernel is latency and register bound (about 90
dependent memory round trips per step), not bandwidth bound.  Hot array
indices are unsigned (no wraparound code), the training kernel uses fastmath
(approximate division and square root), long-lived scalars are 32-bit, and
the register cap (80) keeps three 256-thread blocks resident per SM (396
networks at once on 132 SMs).  Measured on an H200 (``bench/gpu.py``, batch
5, default architecture): 0.15 ms per step for one network, 1.20 M
network-steps/s at P = 300 and 1.42 M at P = 3000.
"""

import numpy as np

from sparseae._options import COL_ACT, COL_B, COL_IN, COL_OUT, COL_T, COL_UNIT, COL_W
from sparseae.kernels.cuda_device import (
    _Z,
    FRESH,
    GLOB,
    _F,
    _f32,
    _u,
    bias_cols,
    cuda,
    dx_col,
    fwd_layer,
    load_batch,
    post,
    upd_t0,
    upd_t0_fused,
    upd_t1,
    upd_t1_dx,
)


def forward_layer(k, s, Le, Lt, PEp, PDp, le, ld, stats_e, stats_d, sp, with_stats, so, sh,
                  x_cur, x_oth, red, B, scale, fuse0, tid, NT):
    """Layer ``k`` (chain order: encoder then decoder) of step ``s``'s forward
    pass: pre-activations, then statistics, activation and, on the output
    layer, the L1 loss and dLoss/dz.  Returns this thread's part of the
    loss."""
    if k < Le:
        Pp = PEp
        tab = le
        kk = k
        st = stats_e[sp]
    else:
        Pp = PDp
        tab = ld
        kk = k - Le
        st = stats_d[sp]
    hin = x_cur if k == 0 else so[1 + 2 * k]
    last = k == Lt - 1
    zo = x_oth if last else so[3 + 2 * k]
    if not (k == 0 and fuse0 and s > 0):  # else: done by the fused update
        fwd_layer(Pp, tab, kk, hin, zo, sh, red, tid, NT)
        cuda.syncthreads()
    lp = post(sh, zo, tab[kk, COL_OUT], B, 1 if last else 0, tab[kk, COL_ACT], st,
              tab[kk, COL_UNIT], with_stats, x_cur, scale, tid, NT)
    cuda.syncthreads()
    return lp


def backward_layer(k, Le, Lt, A, le, ld, ss, inv, X, orow, start, bs, n, so, sh, x_cur, x_oth,
                   red, b1, b2, e32, fuse0, more, tid, NT, NW):
    """Backward through layer ``k`` fused with its masked Adam update.

    ``A = (PEp, MEp, mEp, vEp, PDp, MDp, mDp, vDp)``: the pair's parameter,
    mask and moment rows.  With ``fuse0`` (first encoder layer stored (out,
    in)) the next batch is loaded where dLoss/dy was and the first layer's
    update also forms its pre-activations.
    """
    if k < Le:
        Pp, Mk, Mm, Vv = A[0], A[1], A[2], A[3]
        tab = le
        kk = k
    else:
        Pp, Mk, Mm, Vv = A[4], A[5], A[6], A[7]
        tab = ld
        kk = k - Le
    t = tab[kk, COL_T]
    n_in = tab[kk, COL_IN]
    n_out = tab[kk, COL_OUT]
    w0 = tab[kk, COL_W]
    b0 = tab[kk, COL_B]
    hin = x_cur if k == 0 else so[1 + 2 * k]
    dz = x_oth if k == Lt - 1 else so[4 + 2 * k]
    dxo = so[2 + 2 * k] if k > 0 else 0
    hpo = so[1 + 2 * k] if k > 0 else 0
    fuse = k == 0 and fuse0 and more
    if k == Lt - 2 and fuse0 and more:
        # dLoss/dy (x_oth) is dead: the next batch goes there
        load_batch(X, orow, start + bs, min(bs, n - start - bs), sh, x_oth, X.shape[1], tid, NT)
        if k == 0:
            cuda.syncthreads()
    if k > 0 and t == 0:
        dx_col(Pp, w0, n_out, n_in, dz, hpo, dxo, sh, tid, NT)
        cuda.syncthreads()
    if t == 0:
        if fuse:
            upd_t0_fused(Pp, Mk, Mm, Vv, w0, b0, n_out, n_in, dz, hin, 0, 0, x_oth,
                         so[3], sh, red, ss, inv, b1, b2, e32, tid, NW)
        else:
            upd_t0(Pp, Mk, Mm, Vv, w0, b0, n_out, n_in, dz, hin, 0, 0, 0, 0,
                   sh, red, ss, inv, b1, b2, e32, tid, NW)
    else:
        if k > 0:
            upd_t1_dx(Pp, Mk, Mm, Vv, w0, b0, n_in, n_out, hin, dz, dxo, hpo, 0, 0,
                      sh, red, ss, inv, b1, b2, e32, tid, NW)
        else:
            upd_t1(Pp, Mk, Mm, Vv, w0, b0, n_in, n_out, hin, dz, 0, 0, 0, 0,
                   sh, red, ss, inv, b1, b2, e32, tid, NW)
        bias_cols(Pp, Mk, Mm, Vv, b0, n_out, dz, sh, ss, inv, b1, b2, e32, tid, NT)
    cuda.syncthreads()


def train(PE, ME, mE, vE, stepE, le, PD, MD, mD, vD, stepD, ld, X, orders,
          batch_size, coef, beta1, beta2, eps, fresh, stats_e, stats_d, with_stats,
          so, part, losses, scratch):
    """One epoch of pair ``p = blockIdx.x``; the host side (``cuda._TrainPlan``)
    prepares every argument."""
    # long-lived scalars are kept 32-bit: the kernel is register bound
    p = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    NT = np.int32(cuda.blockDim.x)
    NW = np.int32(NT // 32)
    if GLOB:
        sh = scratch[p]
    else:
        sh = cuda.shared.array(0, _f32)
    Le = np.int32(le.shape[0])
    Lt = np.int32(Le + ld.shape[0])
    n = np.int32(orders.shape[1])
    D = np.int32(X.shape[1])
    bs = np.int32(batch_size)
    orow = orders[p]
    A = (PE[p], ME[p], mE[p], vE[p], PD[p], MD[p], mD[p], vD[p])
    sp = p if with_stats else 0
    b1 = _F(beta1)
    b2 = _F(beta2)
    e32 = _F(eps)
    red = np.int32(so[2])
    x_cur = np.int32(so[0])
    x_oth = np.int32(so[1])
    fuse0 = le[0, COL_T] == 0
    nsteps = np.int32((n + bs - 1) // bs)
    if FRESH:  # a new Adam every step: the moments stay 0
        for k in range(tid, A[2].shape[0], NT):
            A[2][_u(k)] = _Z
            A[3][_u(k)] = _Z
        for k in range(tid, A[6].shape[0], NT):
            A[6][_u(k)] = _Z
            A[7][_u(k)] = _Z
    part[p, tid] = 0.0  # this thread's loss, accumulated here (not in registers)
    load_batch(X, orow, 0, min(bs, n), sh, x_cur, D, tid, NT)
    cuda.syncthreads()
    for s in range(nsteps):
        start = np.int32(s * bs)
        B = np.int32(min(bs, n - start))
        scale = _F(1.0 / (B * D))
        more = s + 1 < nsteps
        if s > 0 and not fuse0:
            load_batch(X, orow, start, B, sh, x_cur, D, tid, NT)
            cuda.syncthreads()
        lp = _Z
        for k in range(Lt):
            lp += forward_layer(k, s, Le, Lt, A[0], A[4], le, ld, stats_e, stats_d, sp,
                                with_stats, so, sh, x_cur, x_oth, red, B, scale, fuse0, tid, NT)
        part[p, tid] += np.float64(lp) * np.float64(scale)
        # Adam's step size and 1/sqrt(bias correction) of this step, encoder and
        # decoder (host-computed as in the CPU kernels), last layer first
        for k in range(Lt - 1, -1, -1):
            enc = k < Le
            backward_layer(k, Le, Lt, A, le, ld, coef[p, s, 0 if enc else 2],
                           coef[p, s, 1 if enc else 3], X, orow, start, bs, n, so, sh, x_cur,
                           x_oth, red, b1, b2, e32, fuse0, more, tid, NT, NW)
        if fuse0:
            x_cur, x_oth = x_oth, x_cur
    if with_stats:
        for u in range(tid, stats_e.shape[1], NT):
            stats_e[p, u, 0] += n
        for u in range(tid, stats_d.shape[1], NT):
            stats_d[p, u, 0] += n
    cuda.syncthreads()
    if tid == 0:
        if FRESH:
            stepE[p] = 1
            stepD[p] = 1
        else:
            stepE[p] += nsteps
            stepD[p] += nsteps
        tot = 0.0
        for j in range(NT):
            tot += part[p, j]
        losses[p] = tot / nsteps

"""The building blocks of the Numba CPU kernels: layers, Adam, the L1 loss.

Helpers compiled in-process (``cache=False``) and inlined into the entry points
of ``kernels/cpu.py``, which alone are cached on disk: a caller compiled next
to a helper loaded from the cache would link its object code instead of
inlining its LLVM IR, vectorise differently and round differently, so results
would depend on the cache's state.  The data layout and the scalar math they
share with the CUDA kernels are in ``kernels/contract.py``.

A layer is addressed by its half's parameter row ``p``, layer table ``lay``
and index ``l``.  The fused statistics of a forward pass travel as one tuple
``fused = (stats, marks, cstate, with_stats, conj, threshold)``: ``stats``
``(units, 3)`` float64 VARIANCE accumulators and ``marks`` ``(units,)``
CONJUNCTIVE marks, both indexed by the table's unit offsets, ``cstate``
``(layers, 3)`` the CONJUNCTIVE state, and the flags.
"""

import numpy as np
from numba import njit

from sparseae._options import (
    COL_ACT,
    COL_B,
    COL_IN,
    COL_OUT,
    COL_T,
    COL_UNIT,
    COL_W,
    FASTMATH,
    RELU,
)
from sparseae.kernels.contract import adam_moments, adam_step, fresh_step, l1_grad, marked

_F = np.float32
JIT = dict(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")
HELPER = dict(JIT, cache=False)
#: Sums in a fixed order (no reassociation): the same in every process.
EXACT = dict(cache=False, fastmath={"nsz", "contract"}, nogil=True, error_model="numpy")


@njit(**HELPER)
def conjunctive_update(z, marks, state, threshold):
    """AND one sample's CONJUNCTIVE marks into ``marks`` (ALGORITHM.md section 3).

    ``z`` is one sample's pre-activation over the layer's units.  A unit is
    marked when its min-max normalised value is below ``threshold``
    (:func:`~sparseae.kernels.contract.marked`).  ``state = [samples_seen,
    count, stopped]``: the first sample sets the marks; before each later
    sample, if at most one unit is still marked the layer stops and later
    samples are ignored (the reference's rule).
    """
    n = z.shape[0]
    if state[2] != 0:
        return
    if state[0] > 0 and state[1] <= 1:
        state[2] = 1
        return
    lo = z[0]
    hi = z[0]
    for o in range(1, n):
        if z[o] < lo:
            lo = z[o]
        if z[o] > hi:
            hi = z[o]
    span = hi - lo
    count = 0
    first = state[0] == 0
    for o in range(n):
        sel = 1 if marked(z[o], lo, span, threshold) else 0
        if first:
            marks[o] = sel
        elif sel == 0:
            marks[o] = 0
        count += marks[o]
    state[0] += 1
    state[1] = count


@njit(**HELPER)
def conj_done(cstate):
    """Whether every layer's CONJUNCTIVE state ignores further samples: stopped,
    or about to stop at the next sample (:func:`conjunctive_update`)."""
    for l in range(cstate.shape[0]):
        if cstate[l, 2] == 0 and not (cstate[l, 0] > 0 and cstate[l, 1] <= 1):
            return False
    return True


# Cody-Waite range reduction and the minimax polynomial of the Cephes library's expf
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_EXP_P = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3),
          _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1))
# the largest -z the sigmoid sees: 1 / (1 + e^87.3) is still a normal float32
_SIG_MAX = _F(87.3)


@njit(**HELPER)
def sigmoid_inplace(z, scratch):
    """``z <- 1 / (1 + exp(-z))`` in float32, vectorised.

    numba has no vector ``exp`` without Intel's SVML, and a scalar ``expf``
    per output was a third of a training step.  Here ``exp`` is computed as
    ``2^n * p(r)`` (Cody-Waite reduction, degree-6 polynomial, about 1 ulp),
    with ``2^n`` built in the int32 ``scratch`` (length >= ``len(z)``) so
    that every loop vectorises.  NaN propagates; the argument is clamped to
    [-87, 87.3] so 2^n stays a normal float and the output stays at or above
    1 / (1 + e^87.3) = 1.2e-38, a normal number (``kernels.fpenv``).
    """
    n = z.shape[0]
    for o in range(n):
        x = -z[o]
        if x > _SIG_MAX:
            x = _SIG_MAX
        if x < _F(-87.0):
            x = _F(-87.0)
        k = np.floor(x * _LOG2E + _F(0.5))
        r = x - k * _LN2_HI - k * _LN2_LO
        p = _EXP_P[0]
        p = p * r + _EXP_P[1]
        p = p * r + _EXP_P[2]
        p = p * r + _EXP_P[3]
        p = p * r + _EXP_P[4]
        p = p * r + _EXP_P[5]
        z[o] = p * r * r + r + _F(1.0)
        scratch[o] = (np.int32(k) + np.int32(127)) << 23
    scale = scratch[:n].view(np.float32)
    for o in range(n):
        z[o] = _F(1.0) / (_F(1.0) + z[o] * scale[o])


@njit(**HELPER)
def row_dots(A, na, x, n, B, out, sb):
    """``out[r + b * sb] = A[r] . x[b]`` for rows ``r < na`` of ``A`` and ``b < B``
    of ``x`` (both flat, rows of length ``n``).

    A register-blocked kernel: two rows of ``A`` against four rows of ``x``
    (eight independent sums, six loads per eight multiply-adds), or against
    one row of ``x`` for the leftover rows; each sum is its own reduction.
    An odd last row of ``A`` is paired with itself (its sums are computed
    twice, identically, and stored twice in the same place).
    """
    r = 0
    while r < na:
        r1 = r + 1 if r + 1 < na else r
        a0 = A[r * n:(r + 1) * n]
        a1 = A[r1 * n:(r1 + 1) * n]
        b = 0
        while b + 4 <= B:
            x0 = x[b * n:(b + 1) * n]
            x1 = x[(b + 1) * n:(b + 2) * n]
            x2 = x[(b + 2) * n:(b + 3) * n]
            x3 = x[(b + 3) * n:(b + 4) * n]
            s00 = _F(0.0)
            s01 = _F(0.0)
            s02 = _F(0.0)
            s03 = _F(0.0)
            s10 = _F(0.0)
            s11 = _F(0.0)
            s12 = _F(0.0)
            s13 = _F(0.0)
            for i in range(n):
                u = a0[i]
                v = a1[i]
                s00 += u * x0[i]
                s01 += u * x1[i]
                s02 += u * x2[i]
                s03 += u * x3[i]
                s10 += v * x0[i]
                s11 += v * x1[i]
                s12 += v * x2[i]
                s13 += v * x3[i]
            out[r + b * sb] = s00
            out[r + (b + 1) * sb] = s01
            out[r + (b + 2) * sb] = s02
            out[r + (b + 3) * sb] = s03
            out[r1 + b * sb] = s10
            out[r1 + (b + 1) * sb] = s11
            out[r1 + (b + 2) * sb] = s12
            out[r1 + (b + 3) * sb] = s13
            b += 4
        while b < B:
            x0 = x[b * n:(b + 1) * n]
            s0 = _F(0.0)
            s1 = _F(0.0)
            for i in range(n):
                s0 += a0[i] * x0[i]
                s1 += a1[i] * x0[i]
            out[r + b * sb] = s0
            out[r1 + b * sb] = s1
            b += 1
        r += 2


#: Row length below which :func:`combine_rows` does not group rows.
_SHORT = 64


@njit(**HELPER)
def _axpy(y, n, k, c0, a0, c1, a1, c2, a2, c3, a3, first):
    """``y[:n] (+)= c0 a0 + c1 a1 + ...`` over the first ``k`` (1 to 4) pairs
    (``first``: ``y`` is overwritten)."""
    if k == 4:
        if first:
            for j in range(n):
                y[j] = c0 * a0[j] + c1 * a1[j] + c2 * a2[j] + c3 * a3[j]
        else:
            for j in range(n):
                y[j] += c0 * a0[j] + c1 * a1[j] + c2 * a2[j] + c3 * a3[j]
    elif k == 3:
        if first:
            for j in range(n):
                y[j] = c0 * a0[j] + c1 * a1[j] + c2 * a2[j]
        else:
            for j in range(n):
                y[j] += c0 * a0[j] + c1 * a1[j] + c2 * a2[j]
    elif k == 2:
        if first:
            for j in range(n):
                y[j] = c0 * a0[j] + c1 * a1[j]
        else:
            for j in range(n):
                y[j] += c0 * a0[j] + c1 * a1[j]
    elif first:
        for j in range(n):
            y[j] = c0 * a0[j]
    else:
        for j in range(n):
            y[j] += c0 * a0[j]


@njit(**HELPER)
def combine_rows(y, A, n, c, c0, cs, k):
    """``y[:n] = sum_r c[c0 + r * cs] * A[r * n:(r + 1) * n]`` over ``r < k``.

    Rows whose coefficient is 0 (dead ReLU units) are skipped, which is exact;
    the others are taken four at a time, so each pass loads and stores ``y``
    once for four multiply-adds.  ``y`` is 0 when every coefficient is 0.
    Rows shorter than :data:`_SHORT` take one plain pass per row (the
    grouping costs more than it saves there).
    """
    if n < _SHORT:
        for j in range(n):
            y[j] = _F(0.0)
        for r in range(k):
            cr = c[c0 + r * cs]
            if cr != 0:
                for j in range(n):
                    y[j] += cr * A[r * n + j]
        return
    first = True
    cnt = 0
    q0 = q1 = q2 = q3 = _F(0.0)
    r0 = r1 = r2 = r3 = 0
    for r in range(k + 1):  # r == k flushes the last one to three rows
        if r < k:
            cr = c[c0 + r * cs]
            if cr == 0:
                continue
            if cnt == 0:
                q0, r0 = cr, r * n
            elif cnt == 1:
                q1, r1 = cr, r * n
            elif cnt == 2:
                q2, r2 = cr, r * n
            else:
                q3, r3 = cr, r * n
            cnt += 1
            if cnt < 4:
                continue
        if cnt > 0:
            _axpy(y, n, cnt, q0, A[r0:r0 + n], q1, A[r1:r1 + n], q2, A[r2:r2 + n],
                  q3, A[r3:r3 + n], first)
            first = False
            cnt = 0
    if first:  # every coefficient was 0
        for j in range(n):
            y[j] = _F(0.0)


@njit(**HELPER)
def dense_forward(p, lay, l, x, h, B, fused, scratch):
    """Layer ``l`` of a half on a batch: ``h = act(x W^T + b)`` on flat buffers.

    ``x`` holds ``B * n_in`` inputs, ``h`` receives ``B * n_out`` outputs.
    With ``fused``'s ``with_stats`` the pre-activations are added to the
    layer's rows of ``stats``; with ``conj`` each sample's pre-activation is
    fed to :func:`conjunctive_update` in order.  ``scratch`` is int32 work
    space of at least ``n_out`` (for the sigmoid).
    """
    stats, marks, cstate, with_stats, conj, threshold = fused
    n_in = lay[l, COL_IN]
    n_out = lay[l, COL_OUT]
    w = p[lay[l, COL_W]:lay[l, COL_W] + n_in * n_out]
    bias = p[lay[l, COL_B]:lay[l, COL_B] + n_out]
    u0 = lay[l, COL_UNIT]
    if lay[l, COL_T] == 0:  # (out, in): one dot product per output and sample
        row_dots(w, n_out, x, n_in, B, h, n_out)
        for b in range(B):
            for o in range(n_out):
                h[b * n_out + o] += bias[o]
    else:  # (in, out): each sample's output row accumulates weight rows
        for b in range(B):
            hb = b * n_out
            for o in range(n_out):
                h[hb + o] = bias[o]
            xb = b * n_in
            for i in range(n_in):
                xi = x[xb + i]
                if xi != 0:  # ReLU inputs are often 0: skipping is exact
                    wi = i * n_out
                    for o in range(n_out):
                        h[hb + o] += xi * w[wi + o]
    for b in range(B):
        hb = b * n_out
        if with_stats:
            for o in range(n_out):
                zo = np.float64(h[hb + o])
                stats[u0 + o, 0] += 1.0
                stats[u0 + o, 1] += zo
                stats[u0 + o, 2] += zo * zo
        if conj:
            conjunctive_update(h[hb:hb + n_out], marks[u0:u0 + n_out], cstate[l], threshold)
        if lay[l, COL_ACT] == RELU:
            for o in range(n_out):
                if h[hb + o] < 0:
                    h[hb + o] = _F(0.0)
        else:
            sigmoid_inplace(h[hb:hb + n_out], scratch)


@njit(**HELPER)
def dense_backward(p, lay, l, x, h, dh, B, g, dx, need_dx):
    """Backward through layer ``l`` of a half.

    ``dh`` (``B * n_out``) holds dLoss/dh on entry and dLoss/dz on exit.
    Writes (not accumulates) the layer's weight gradient, in its storage
    orientation, and bias gradient into its slices of the gradient row ``g``;
    with ``need_dx`` writes dLoss/dx into ``dx`` (``B * n_in``).
    """
    n_in = lay[l, COL_IN]
    n_out = lay[l, COL_OUT]
    w = p[lay[l, COL_W]:lay[l, COL_W] + n_in * n_out]
    gw = g[lay[l, COL_W]:lay[l, COL_W] + n_in * n_out]
    gb = g[lay[l, COL_B]:lay[l, COL_B] + n_out]
    nt = B * n_out
    if lay[l, COL_ACT] == RELU:
        for k in range(nt):
            if h[k] <= 0:
                dh[k] = _F(0.0)
    else:
        for k in range(nt):
            dh[k] *= h[k] * (_F(1.0) - h[k])
    for o in range(n_out):
        gb[o] = _F(0.0)
    for b in range(B):
        for o in range(n_out):
            gb[o] += dh[b * n_out + o]
    if lay[l, COL_T] == 0:
        for o in range(n_out):  # gw[o] = sum_b dh[b, o] x[b]
            combine_rows(gw[o * n_in:(o + 1) * n_in], x, n_in, dh, o, n_out, B)
        if need_dx:
            for k in range(B * n_in):
                dx[k] = _F(0.0)
            for b in range(B):
                xb = b * n_in
                for o in range(n_out):
                    d = dh[b * n_out + o]
                    if d != 0:
                        wo = o * n_in
                        for i in range(n_in):
                            dx[xb + i] += d * w[wo + i]
    else:
        for i in range(n_in):  # gw[i] = sum_b x[b, i] dh[b]
            combine_rows(gw[i * n_out:(i + 1) * n_out], dh, n_out, x, i, n_in, B)
        if need_dx:  # dx[b, i] = W[i] . dh[b]
            row_dots(w, n_in, dh, n_out, B, dx, n_in)


@njit(**HELPER)
def adam_update(p, g, mask, m, v, step, lr, adam):
    """Masked Adam (PyTorch's formula, ``kernels.contract``) over a whole row.

    The gradient is multiplied by ``mask`` first, so a pruned entry (0 weight,
    0 moments) gets no update and stays exactly 0.  ``step`` is a 1-element
    int64 array, advanced here.  With ``adam.fresh`` the optimiser state is
    discarded every step (a new Adam at step 1, as the reference's Lipi-AE-S
    does): the moments are not read or written (they stay 0: the caller
    zeroes them once) and the update is ``lr g / (|g| + eps)``
    (:func:`~sparseae.kernels.contract.fresh_step`: one divide, no square root).
    """
    beta1, beta2, eps, fresh = adam
    b1 = _F(beta1)
    b2 = _F(beta2)
    e = _F(eps)
    if fresh:
        step[0] = 1
        lr32 = _F(lr)
        for k in range(p.shape[0]):
            p[k] = fresh_step(p[k], g[k] * mask[k], lr32, e)
        return
    t = step[0] + 1
    step[0] = t
    step_size = _F(lr / (1.0 - beta1 ** t))
    inv_sqrt_bc2 = _F(1.0 / np.sqrt(1.0 - beta2 ** t))
    for k in range(p.shape[0]):
        mk, vk = adam_moments(m[k], v[k], g[k] * mask[k], b1, b2)
        m[k] = mk
        v[k] = vk
        p[k] = adam_step(p[k], mk, vk, step_size, inv_sqrt_bc2, e)


@njit(**HELPER)
def l1_loss_grad(y, x, dy, n, scale):
    """Return ``sum|y - x| * scale`` over ``n`` entries; write dLoss/dy to ``dy``.

    ``scale = 1 / (B * D)`` makes it the mean absolute error.  The float32 sum
    is scaled in float64: a float32 ``s * scale`` may legally be moved into
    the (reassociated) sum by the optimiser in one compilation context and not
    in another, which made the reported loss depend on whether the kernel came
    from the disk cache.
    """
    sc = _F(scale)
    for k in range(n):
        dy[k] = l1_grad(y[k] - x[k], sc)
    return abs_sum(y, x, n) * np.float64(scale)


_LANES = 16


@njit(**EXACT)
def abs_sum(y, x, n):
    """``sum |y[k] - x[k]|`` over ``k < n`` in a fixed order, as float64.

    A reassociated float32 reduction was summed in an order that differed
    between processes (the loss of the same parameters could differ in the
    last bits depending on whether the kernel was compiled in the process or
    loaded from the cache).  Here 16 float32 lanes accumulate element ``k``
    in lane ``k % 16`` (a plain vector add, no reassociation needed) and the
    lanes are added in order at the end.
    """
    acc = np.zeros(_LANES, np.float32)
    full = n - n % _LANES
    for j in range(0, full, _LANES):
        for lane in range(_LANES):
            acc[lane] += abs(y[j + lane] - x[j + lane])
    total = 0.0
    for k in range(full, n):
        total += abs(y[k] - x[k])
    for lane in range(_LANES):
        total += acc[lane]
    return total


# ------------------------------------------------------------------ network halves


@njit(**HELPER)
def buffer_offsets(lay, B):
    """Offsets of each layer's output inside one flat activation buffer."""
    L = lay.shape[0]
    off = np.zeros(L + 1, np.int64)
    for l in range(L):
        off[l + 1] = off[l] + B * lay[l, COL_OUT]
    return off


@njit(**HELPER)
def max_width(lay):
    w = lay[0, COL_IN]
    for l in range(lay.shape[0]):
        w = max(w, lay[l, COL_OUT])
    return w


@njit(**HELPER)
def n_units(lay):
    L = lay.shape[0]
    return lay[L - 1, COL_UNIT] + lay[L - 1, COL_OUT]


@njit(**HELPER)
def half_forward(p, lay, x, B, hbuf, hoff, fused, scratch):
    """Forward ``B`` samples (flat ``x``) through every layer of one half.

    Layer ``l``'s output lands in ``hbuf[hoff[l]:hoff[l+1]]``; ``fused`` and
    ``scratch`` as for :func:`dense_forward` (``scratch`` of at least
    :func:`max_width`).  Returns the last layer's output.
    """
    inp = x
    for l in range(lay.shape[0]):
        out = hbuf[hoff[l]:hoff[l + 1]]
        dense_forward(p, lay, l, inp, out, B, fused, scratch)
        inp = out
    return inp


@njit(**HELPER)
def half_backward(p, lay, x, B, hbuf, hoff, dout, g, work, need_dx):
    """Backward through one half.

    ``dout`` holds dLoss/d(output of the last layer) (``B * width``) and is
    overwritten; ``g`` receives the whole gradient row; ``work`` is scratch of
    at least ``2 * B * max_width``.  Returns dLoss/dx (a view of ``work``)
    when ``need_dx``.
    """
    mw = work.shape[0] // 2
    cur = dout
    which = 0
    for l in range(lay.shape[0] - 1, -1, -1):
        inp = hbuf[hoff[l - 1]:hoff[l]] if l > 0 else x
        nxt = work[which * mw:which * mw + B * lay[l, COL_IN]]
        dense_backward(p, lay, l, inp, hbuf[hoff[l]:hoff[l + 1]], cur, B, g, nxt,
                       need_dx or l > 0)
        cur = nxt
        which = 1 - which
    return cur


@njit(**HELPER)
def no_fusion(lay):
    """A ``fused`` tuple that fuses nothing (for forward passes without statistics)."""
    return (np.zeros((1, 3), np.float64), np.zeros(n_units(lay), np.uint8),
            np.zeros((lay.shape[0], 3), np.int64), False, False, 0.0)

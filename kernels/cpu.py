"""Numba CPU kernels for masked dense autoencoders (float32).

Contract (shared with ``kernels/cuda.py``)
-----------------------------------------
* A network half (encoder or decoder) is one row of a flat float32 arena plus an
  int64 *layer table* (``sparseae._options.COL_*`` columns: ``n_in, n_out,
  w_off, b_off, act, transposed, unit_off``).
* A layer's weights are stored with their long axis contiguous: ``(out, in)``
  row-major when ``n_in >= n_out`` (``transposed = 0``), else ``(in, out)``
  (``transposed = 1``).  Every loop then runs along a contiguous axis of length
  ``max(n_in, n_out)``, which is what lets the 30 -> 1000 output layer vectorise.
  The library hides this behind ``(out, in)`` views.
* Pruned entries hold exactly 0 in the parameters (the pruning code zeroes
  them), so the forward pass reads the weights alone; the mask is applied to
  the gradient inside the Adam update, which therefore leaves pruned weights,
  and their Adam moments, exactly 0.
* Activations are flat ``(B, width)`` row-major buffers.
* Fused reductions: per unit ``(count, sum, sum of squares)`` of the
  pre-activation for VARIANCE (float64 accumulators on purpose: a float32
  sum of squares over an epoch loses the spread to cancellation), and the
  CONJUNCTIVE mark/AND with the reference's early-stop rule.
"""

import numpy as np
from numba import njit, prange

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
from sparseae.kernels import fpenv
from sparseae.kernels.fpenv import flush_tiny

_F = np.float32
_JIT = dict(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")
# Only the entry points that Python calls are cached on disk; the helpers they call
# are compiled in-process (cache=False) and never call another cached function.
# A caller compiled next to a helper loaded from the cache would link its object
# code instead of inlining its LLVM IR, vectorise differently and round
# differently: results would depend on the cache's state and differ between
# processes in the last bits.  This way a cached entry point and a freshly
# compiled one are the same code.
_HELPER = dict(_JIT, cache=False)


# --------------------------------------------------------------------------- layers


@njit(**_HELPER)
def conjunctive_update(z, marks, state, threshold):
    """AND one sample's CONJUNCTIVE marks into ``marks`` (ALGORITHM.md section 3).

    ``z`` is one sample's pre-activation over the layer's units.  A unit is
    marked when its min-max normalised value is below ``threshold``; a sample
    whose ``z`` is constant marks nothing.  ``state = [samples_seen, count,
    stopped]``: the first sample sets the marks; before each later sample, if
    at most one unit is still marked the layer stops and later samples are
    ignored (the reference's rule).
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
        sel = 0
        if span > 0:
            if (z[o] - lo) / span < threshold:
                sel = 1
        if first:
            marks[o] = sel
        elif sel == 0:
            marks[o] = 0
        count += marks[o]
    state[0] += 1
    state[1] = count


# Cody-Waite range reduction and the minimax polynomial of the Cephes library's expf
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_EXP_P = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3),
          _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1))
# the largest -z the sigmoid sees: 1 / (1 + e^87.3) is still a normal float32
_SIG_MAX = _F(87.3)


@njit(**_HELPER)
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


@njit(**_HELPER)
def _dots(wr, x, n, B, out, stride):
    """``out[b * stride] = wr . x[b * n:(b + 1) * n]`` for every ``b < B``.

    Four batch rows per pass, so each weight is loaded once for four
    products; every dot product is still its own reduction.
    """
    b = 0
    while b + 4 <= B:
        x0 = x[b * n:(b + 1) * n]
        x1 = x[(b + 1) * n:(b + 2) * n]
        x2 = x[(b + 2) * n:(b + 3) * n]
        x3 = x[(b + 3) * n:(b + 4) * n]
        s0 = _F(0.0)
        s1 = _F(0.0)
        s2 = _F(0.0)
        s3 = _F(0.0)
        for i in range(n):
            wi = wr[i]
            s0 += wi * x0[i]
            s1 += wi * x1[i]
            s2 += wi * x2[i]
            s3 += wi * x3[i]
        out[b * stride] = s0
        out[(b + 1) * stride] = s1
        out[(b + 2) * stride] = s2
        out[(b + 3) * stride] = s3
        b += 4
    while b < B:
        x0 = x[b * n:(b + 1) * n]
        s0 = _F(0.0)
        for i in range(n):
            s0 += wr[i] * x0[i]
        out[b * stride] = s0
        b += 1


@njit(**_HELPER)
def dense_forward(w, bias, n_in, n_out, transposed, act, x, h, B,
                  stats, with_stats, marks, cstate, conj, threshold, scratch):
    """One dense layer on a batch: ``h = act(x W^T + b)`` on flat buffers.

    ``x`` holds ``B * n_in`` inputs, ``h`` receives ``B * n_out`` outputs.
    With ``with_stats`` the pre-activations are added to ``stats`` (``(n_out,
    3)`` float64: count, sum, sum of squares); with ``conj`` each sample's
    pre-activation is fed to :func:`conjunctive_update` in order.  ``scratch``
    is int32 work space of at least ``n_out`` (for the sigmoid).
    """
    if transposed == 0:  # (out, in): one dot product per output and sample
        for o in range(n_out):
            _dots(w[o * n_in:(o + 1) * n_in], x, n_in, B, h[o:], n_out)
            bo = bias[o]
            for b in range(B):
                h[b * n_out + o] += bo
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
                stats[o, 0] += 1.0
                stats[o, 1] += zo
                stats[o, 2] += zo * zo
        if conj:
            conjunctive_update(h[hb:hb + n_out], marks, cstate, threshold)
        if act == RELU:
            for o in range(n_out):
                if h[hb + o] < 0:
                    h[hb + o] = _F(0.0)
        else:
            sigmoid_inplace(h[hb:hb + n_out], scratch)


@njit(**_HELPER)
def dense_backward(w, n_in, n_out, transposed, act, x, h, dh, B, gw, gb, dx, need_dx):
    """Backward through one dense layer.

    ``dh`` (``B * n_out``) holds dLoss/dh on entry and dLoss/dz on exit.
    Writes (not accumulates) the weight gradient ``gw`` in the layer's storage
    orientation and the bias gradient ``gb``; with ``need_dx`` writes
    dLoss/dx into ``dx`` (``B * n_in``).
    """
    nt = B * n_out
    if act == RELU:
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
    if transposed == 0:
        for k in range(n_in * n_out):
            gw[k] = _F(0.0)
        for o in range(n_out):
            wo = o * n_in
            for b in range(B):
                d = dh[b * n_out + o]
                if d != 0:
                    xb = b * n_in
                    for i in range(n_in):
                        gw[wo + i] += d * x[xb + i]
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
        for k in range(n_in * n_out):
            gw[k] = _F(0.0)
        for i in range(n_in):
            wi = i * n_out
            for b in range(B):
                xi = x[b * n_in + i]
                if xi != 0:
                    db = b * n_out
                    for o in range(n_out):
                        gw[wi + o] += xi * dh[db + o]
        if need_dx:
            for b in range(B):
                db = b * n_out
                for i in range(n_in):
                    wi = i * n_out
                    s = _F(0.0)
                    for o in range(n_out):
                        s += w[wi + o] * dh[db + o]
                    dx[b * n_in + i] = s


@njit(**_HELPER)
def fresh_adam_update(p, g, mask, step, lr, beta1, beta2, eps):
    """:func:`adam_update` with ``fresh``, without touching the moments (which a
    fresh Adam keeps at 0: :func:`train_epoch` zeroes them once per epoch
    instead of writing zeros at every step).  Sets ``step`` to 1."""
    b1 = _F(beta1)
    b2 = _F(beta2)
    e = _F(eps)
    one = _F(1.0)
    step[0] = 1
    step_size = _F(lr / (1.0 - beta1))
    inv_sqrt_bc2 = _F(1.0 / np.sqrt(1.0 - beta2))
    for k in range(p.shape[0]):
        gk = g[k] * mask[k]
        mk = (one - b1) * gk
        vk = (one - b2) * gk * gk
        p[k] -= step_size * mk / (np.sqrt(vk) * inv_sqrt_bc2 + e)


@njit(**_HELPER)
def adam_update(p, g, mask, m, v, step, lr, beta1, beta2, eps, fresh):
    """Masked Adam (PyTorch's formula) over a whole arena row.

    The gradient is multiplied by ``mask`` first, so a pruned entry (0 weight,
    0 moments) gets no update and stays exactly 0.  ``step`` is a 1-element
    int64 array, advanced here.  With ``fresh`` the optimiser state is
    discarded every step (a new Adam at step 1, as the reference's Lipi-AE-S
    does): ``m`` and ``v`` are left at 0 and the update is about
    ``lr * sign(g)``.
    """
    if fresh:
        fresh_adam_update(p, g, mask, step, lr, beta1, beta2, eps)
        m[:] = _F(0.0)
        v[:] = _F(0.0)
        return
    b1 = _F(beta1)
    b2 = _F(beta2)
    e = _F(eps)
    one = _F(1.0)
    t = step[0] + 1
    step[0] = t
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    step_size = _F(lr / bc1)
    inv_sqrt_bc2 = _F(1.0 / np.sqrt(bc2))
    n = p.shape[0]
    for k in range(n):
        gk = g[k] * mask[k]
        # flush_tiny: a no-op under FTZ (kernels.fpenv), the guard elsewhere
        mk = flush_tiny(b1 * m[k] + (one - b1) * gk)
        vk = flush_tiny(b2 * v[k] + (one - b2) * gk * gk)
        m[k] = mk
        v[k] = vk
        p[k] -= step_size * mk / (np.sqrt(vk) * inv_sqrt_bc2 + e)


@njit(**_HELPER)
def l1_loss_grad(y, x, dy, n, scale):
    """Return ``sum|y - x| * scale`` over ``n`` entries; write dLoss/dy to ``dy``.

    ``scale = 1 / (B * D)`` makes it the mean absolute error; the gradient of
    ``|0|`` is 0, as in PyTorch.  The float32 sum is scaled in float64: a
    float32 ``s * scale`` may legally be moved into the (reassociated) sum by
    the optimiser in one compilation context and not in another, which made
    the reported loss depend on whether the kernel came from the disk cache.
    """
    sc = _F(scale)
    for k in range(n):
        d = y[k] - x[k]
        if d > 0:
            dy[k] = sc
        elif d < 0:
            dy[k] = -sc
        else:
            dy[k] = _F(0.0)
    return abs_sum(y, x, n) * np.float64(scale)


_LANES = 16


@njit(cache=False, fastmath={"nsz", "contract"}, nogil=True, error_model="numpy")
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


@njit(cache=True, fastmath={"nsz", "contract"}, nogil=True, error_model="numpy")
def pairwise_sq_l2(rows):
    """``(n, n)`` float64 squared L2 distances between the rows of ``rows``.

    Each difference is taken in float64 and squared there, so a distance is
    accurate to float64 rounding whatever the rows' norms (a Gram matrix in
    float32 lost up to 4e-5 of it to cancellation).  The sums run in a fixed
    order (8 lanes), the same in every process.
    """
    old = fpenv.enter()
    n, k = rows.shape
    out = np.zeros((n, n), np.float64)
    acc = np.zeros(8, np.float64)
    full = k - k % 8
    for i in range(n):
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
    fpenv.leave(old)
    return out


# ------------------------------------------------------------------ network halves


@njit(**_HELPER)
def _buffer_offsets(lay, B):
    """Offsets of each layer's output inside one flat activation buffer."""
    L = lay.shape[0]
    off = np.zeros(L + 1, np.int64)
    for l in range(L):
        off[l + 1] = off[l] + B * lay[l, COL_OUT]
    return off


@njit(**_HELPER)
def _max_width(lay):
    w = lay[0, COL_IN]
    for l in range(lay.shape[0]):
        w = max(w, lay[l, COL_OUT])
    return w


@njit(**_HELPER)
def half_forward(p, lay, x, B, hbuf, hoff, stats, with_stats, marks, cstate, conj, threshold,
                 scratch):
    """Forward ``B`` samples (flat ``x``) through every layer of one half.

    Layer ``l``'s output lands in ``hbuf[hoff[l]:hoff[l+1]]``.  ``stats`` is
    ``(units, 3)`` and ``marks`` ``(units,)`` indexed by the table's unit
    offsets; ``cstate`` is ``(layers, 3)``; ``scratch`` is int32 work space of
    at least :func:`_max_width` entries.
    """
    L = lay.shape[0]
    inp = x
    for l in range(L):
        n_in = lay[l, COL_IN]
        n_out = lay[l, COL_OUT]
        wo = lay[l, COL_W]
        bo = lay[l, COL_B]
        u0 = lay[l, COL_UNIT]
        out = hbuf[hoff[l]:hoff[l + 1]]
        dense_forward(p[wo:wo + n_in * n_out], p[bo:bo + n_out], n_in, n_out,
                      lay[l, COL_T], lay[l, COL_ACT], inp, out, B,
                      stats[u0:u0 + n_out], with_stats, marks[u0:u0 + n_out],
                      cstate[l], conj, threshold, scratch)
        inp = out
    return inp


@njit(**_HELPER)
def half_backward(p, lay, x, B, hbuf, hoff, dout, g, work, need_dx):
    """Backward through one half.

    ``dout`` holds dLoss/d(output of the last layer) (``B * width``) and is
    overwritten; ``g`` receives the whole gradient row; ``work`` is scratch of
    at least ``2 * B * max_width``.  Returns dLoss/dx (a view of ``work``)
    when ``need_dx``.
    """
    L = lay.shape[0]
    mw = work.shape[0] // 2
    cur = dout
    which = 0
    for l in range(L - 1, -1, -1):
        n_in = lay[l, COL_IN]
        n_out = lay[l, COL_OUT]
        wo = lay[l, COL_W]
        bo = lay[l, COL_B]
        if l > 0:
            inp = hbuf[hoff[l - 1]:hoff[l]]
        else:
            inp = x
        nxt = work[which * mw:which * mw + B * n_in]
        dense_backward(p[wo:wo + n_in * n_out], n_in, n_out, lay[l, COL_T],
                       lay[l, COL_ACT], inp, hbuf[hoff[l]:hoff[l + 1]], cur, B,
                       g[wo:wo + n_in * n_out], g[bo:bo + n_out], nxt,
                       need_dx or l > 0)
        cur = nxt
        which = 1 - which
    return cur


@njit(**_HELPER)
def _units(lay):
    L = lay.shape[0]
    return lay[L - 1, COL_UNIT] + lay[L - 1, COL_OUT]


# ------------------------------------------------------------------- training


@njit(**_JIT)
def train_epoch(pe, me, m_e, v_e, step_e, le,
                pd, md, m_d, v_d, step_d, ld,
                X, order, batch_size, lr, beta1, beta2, eps, fresh,
                stats_e, stats_d, with_stats):
    """Train one encoder/decoder pair for one epoch; return the mean batch L1.

    See :func:`_train_epoch`.  Runs with FTZ/DAZ set (``kernels.fpenv``).
    """
    old = fpenv.enter()
    loss = _train_epoch(pe, me, m_e, v_e, step_e, le, pd, md, m_d, v_d, step_d, ld,
                        X, order, batch_size, lr, beta1, beta2, eps, fresh,
                        stats_e, stats_d, with_stats)
    fpenv.leave(old)
    return loss


@njit(**_HELPER)
def _train_epoch(pe, me, m_e, v_e, step_e, le,
                 pd, md, m_d, v_d, step_d, ld,
                 X, order, batch_size, lr, beta1, beta2, eps, fresh,
                 stats_e, stats_d, with_stats):
    """Train one encoder/decoder pair for one epoch; return the mean batch L1.

    Batches are consecutive slices of ``order`` (indices into ``X``), the last
    one possibly shorter.  Each step: forward, L1 loss, backward, masked Adam on
    both halves (separate Adam states ``m_*``, ``v_*``, ``step_*``).  With
    ``with_stats`` the fused per-unit pre-activation statistics of every
    training forward pass are accumulated into ``stats_e`` / ``stats_d``.
    """
    n = order.shape[0]
    D = X.shape[1]
    Bm = min(batch_size, n)
    hoff_e = _buffer_offsets(le, Bm)
    hoff_d = _buffer_offsets(ld, Bm)
    hbuf_e = np.empty(hoff_e[-1], np.float32)
    hbuf_d = np.empty(hoff_d[-1], np.float32)
    mw = max(_max_width(le), _max_width(ld))
    work = np.empty(2 * Bm * mw, np.float32)
    xb = np.empty(Bm * D, np.float32)
    dy = np.empty(Bm * D, np.float32)
    dcode_buf = np.empty(Bm * ld[0, COL_IN], np.float32)
    ge = np.empty_like(pe)
    gd = np.empty_like(pd)
    no_marks_e = np.zeros(_units(le), np.uint8)
    no_marks_d = np.zeros(_units(ld), np.uint8)
    cs_e = np.zeros((le.shape[0], 3), np.int64)
    cs_d = np.zeros((ld.shape[0], 3), np.int64)
    scratch = np.empty(mw, np.int32)
    if fresh:  # a new Adam every step: the moments stay 0 (written once, not per step)
        m_e[:] = _F(0.0)
        v_e[:] = _F(0.0)
        m_d[:] = _F(0.0)
        v_d[:] = _F(0.0)
    total = 0.0
    nb = 0
    for start in range(0, n, batch_size):
        B = min(batch_size, n - start)
        for b in range(B):
            r = order[start + b]
            for j in range(D):
                xb[b * D + j] = X[r, j]
        x = xb[:B * D]
        code = half_forward(pe, le, x, B, hbuf_e, hoff_e, stats_e, with_stats,
                            no_marks_e, cs_e, False, 0.0, scratch)
        y = half_forward(pd, ld, code, B, hbuf_d, hoff_d, stats_d, with_stats,
                         no_marks_d, cs_d, False, 0.0, scratch)
        loss = l1_loss_grad(y, x, dy, B * D, 1.0 / (B * D))
        total += loss
        nb += 1
        dcode = half_backward(pd, ld, code, B, hbuf_d, hoff_d, dy[:B * D], gd, work, True)
        # the decoder's dx lives in ``work``; move it before the encoder reuses it
        dc = dcode_buf[:dcode.shape[0]]
        dc[:] = dcode
        half_backward(pe, le, x, B, hbuf_e, hoff_e, dc, ge, work, False)
        if fresh:
            fresh_adam_update(pe, ge, me, step_e, lr, beta1, beta2, eps)
            fresh_adam_update(pd, gd, md, step_d, lr, beta1, beta2, eps)
        else:
            adam_update(pe, ge, me, m_e, v_e, step_e, lr, beta1, beta2, eps, False)
            adam_update(pd, gd, md, m_d, v_d, step_d, lr, beta1, beta2, eps, False)
    return total / nb


# ------------------------------------------------------------------ evaluation


@njit(**_JIT)
def forward_half(p, lay, X, chunk):
    """Outputs of one half for every row of ``X`` (``(N, n_in)``), as ``(N, n_out)``."""
    old = fpenv.enter()
    Y = _forward_half(p, lay, X, chunk)
    fpenv.leave(old)
    return Y


@njit(**_HELPER)
def _forward_half(p, lay, X, chunk):
    """Outputs of one half for every row of ``X`` (``(N, n_in)``), as ``(N, n_out)``."""
    N = X.shape[0]
    L = lay.shape[0]
    n_out = lay[L - 1, COL_OUT]
    n_in = lay[0, COL_IN]
    Y = np.empty((N, n_out), np.float32)
    Bm = min(chunk, N)
    hoff = _buffer_offsets(lay, Bm)
    hbuf = np.empty(hoff[-1], np.float32)
    xb = np.empty(Bm * n_in, np.float32)
    stats = np.zeros((1, 3), np.float64)
    marks = np.zeros(_units(lay), np.uint8)
    cs = np.zeros((L, 3), np.int64)
    scratch = np.empty(_max_width(lay), np.int32)
    for start in range(0, N, chunk):
        B = min(chunk, N - start)
        for b in range(B):
            for j in range(n_in):
                xb[b * n_in + j] = X[start + b, j]
        y = half_forward(p, lay, xb[:B * n_in], B, hbuf, hoff, stats, False,
                         marks, cs, False, 0.0, scratch)
        for b in range(B):
            for j in range(n_out):
                Y[start + b, j] = y[b * n_out + j]
    return Y


@njit(**_JIT)
def evaluate_l1(pe, le, pd, ld, X, chunk):
    """Mean absolute reconstruction error of one pair over all rows of ``X``."""
    old = fpenv.enter()
    code = _forward_half(pe, le, X, chunk)
    Y = _forward_half(pd, ld, code, chunk)
    N, D = X.shape
    total = 0.0
    for r in range(N):
        total += abs_sum(Y[r], X[r], D)
    fpenv.leave(old)
    return total / (N * D)


@njit(**_JIT)
def all_pairs_l1(PE, le, PD, ld, Xb):
    """``(E, D)`` matrix of the L1 of every encoder row of ``PE`` with every
    decoder row of ``PD`` on one batch ``Xb``."""
    E = PE.shape[0]
    Dn = PD.shape[0]
    N, F = Xb.shape
    out = np.empty((E, Dn), np.float64)
    old = fpenv.enter()
    codes = []
    for e in range(E):
        codes.append(_forward_half(PE[e], le, Xb, N))
    for e in range(E):
        for d in range(Dn):
            Y = _forward_half(PD[d], ld, codes[e], N)
            s = 0.0
            for r in range(N):
                s += abs_sum(Y[r], Xb[r], F)
            out[e, d] = s / (N * F)
    fpenv.leave(old)
    return out


@njit(**_JIT)
def conjunctive_marks(pe, le, pd, ld, X, threshold):
    """CONJUNCTIVE marks of a pair over the held-out rows of ``X``, in order.

    Each sample is forwarded alone; every layer's marks are ANDed with the
    early-stop rule (:func:`conjunctive_update`).  Once every layer of a half
    has stopped, that half is no longer forwarded (the encoder still is while
    the decoder needs codes), and once both have, the remaining samples are
    skipped: they could not change a mark.  Returns ``(marks_e, marks_d)``:
    one uint8 per unit (1 = inactive on every considered sample).
    """
    old = fpenv.enter()
    N = X.shape[0]
    D = X.shape[1]
    hoff_e = _buffer_offsets(le, 1)
    hoff_d = _buffer_offsets(ld, 1)
    hbuf_e = np.empty(hoff_e[-1], np.float32)
    hbuf_d = np.empty(hoff_d[-1], np.float32)
    marks_e = np.zeros(_units(le), np.uint8)
    marks_d = np.zeros(_units(ld), np.uint8)
    cs_e = np.zeros((le.shape[0], 3), np.int64)
    cs_d = np.zeros((ld.shape[0], 3), np.int64)
    stats = np.zeros((1, 3), np.float64)
    scratch = np.empty(max(_max_width(le), _max_width(ld)), np.int32)
    x = np.empty(D, np.float32)
    for r in range(N):
        done_e = _conj_done(cs_e)
        done_d = _conj_done(cs_d)
        if done_e and done_d:
            break
        for j in range(D):
            x[j] = X[r, j]
        code = half_forward(pe, le, x, 1, hbuf_e, hoff_e, stats, False, marks_e,
                            cs_e, not done_e, threshold, scratch)
        if not done_d:
            half_forward(pd, ld, code, 1, hbuf_d, hoff_d, stats, False, marks_d,
                         cs_d, True, threshold, scratch)
    fpenv.leave(old)
    return marks_e, marks_d


@njit(**_HELPER)
def _conj_done(cstate):
    """Whether every layer's CONJUNCTIVE state ignores further samples: stopped,
    or about to stop at the next sample (:func:`conjunctive_update`)."""
    for l in range(cstate.shape[0]):
        if cstate[l, 2] == 0 and not (cstate[l, 0] > 0 and cstate[l, 1] <= 1):
            return False
    return True


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
    se = np.zeros((e.n_units, 3))
    sd = np.zeros((d.n_units, 3))
    train_epoch(e.params[0], e.mask[0], e.m[0], e.v[0], e.step[0:1], e.table,
                d.params[0], d.mask[0], d.m[0], d.v[0], d.step[0:1], d.table,
                X, order, 1, 1e-3, 0.5, 0.999, 1e-8, False, se, sd, False)
    evaluate_l1(e.params[0], e.table, d.params[0], d.table, X, 2)
    forward_half(e.params[0], e.table, X, 2)
    all_pairs_l1(e.params, e.table, d.params, d.table, X)
    conjunctive_marks(e.params[0], e.table, d.params[0], d.table, X, 0.1)
    return time.perf_counter() - t0


@njit(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy", parallel=True)
def _train_epoch_many(PE, ME, mE, vE, stepE, le, PD, MD, mD, vD, stepD, ld,
                      X, orders, batch_size, lrs, beta1, beta2, eps, fresh,
                      stats_e, stats_d, with_stats):
    P = PE.shape[0]
    out = np.empty(P, np.float64)
    for p in prange(P):
        old = fpenv.enter()  # MXCSR is per thread: set in the worker that runs p
        out[p] = _train_epoch(PE[p], ME[p], mE[p], vE[p], stepE[p:p + 1], le,
                             PD[p], MD[p], mD[p], vD[p], stepD[p:p + 1], ld,
                             X, orders[p], batch_size, lrs[p], beta1, beta2, eps, fresh,
                             stats_e[p], stats_d[p], with_stats)
        fpenv.leave(old)
    return out


def train_epoch_many(PE, ME, mE, vE, stepE, le, PD, MD, mD, vD, stepD, ld,
                     X, orders, batch_size, lrs, beta1, beta2, eps, fresh,
                     stats_e, stats_d, with_stats):
    """:func:`train_epoch` for ``P`` independent pairs (rows of the arena
    arrays), spread over the cores with numba's parallel loop; the same
    contract as ``kernels.cuda.train_epoch_many``.  Returns the ``(P,)`` mean
    batch L1 of every pair; each pair's result equals a :func:`train_epoch`
    call on its own."""
    return _train_epoch_many(PE, ME, mE, vE, stepE, le, PD, MD, mD, vD, stepD, ld,
                             X, orders, batch_size, np.asarray(lrs, np.float64), beta1, beta2,
                             eps, fresh, stats_e, stats_d, with_stats)

"""Device functions of the CUDA kernels (numba.cuda), one per job.

These are plain Python functions: ``kernels/cuda_build.py`` makes a
compile-time specialised copy of each for every kernel configuration (the
constants below replaced, ``cuda`` bound to ``numba.cuda`` or its simulator)
and compiles it as a device function; the copies call each other by name.
The scalar math of one entry (Adam, the CONJUNCTIVE test, the L1 gradient's
sign) is ``kernels/contract.py``'s, shared with the CPU kernels.

Shared-memory buffers are addressed by float offsets into ``sh`` (the
per-block layout of ``cuda._layout``); ``tid``/``NT``/``NW``: thread index,
threads and warps per block.  Hot array indices are cast to unsigned (``_u``):
numba then skips the negative-index wraparound, whose 64-bit select otherwise
costs several instructions per access and blocks strength reduction of the
address arithmetic.
"""

import math

import numpy as np

from sparseae._options import COL_B, COL_IN, COL_OUT, COL_T, COL_W, RELU
from sparseae.kernels.contract import adam_moments, adam_step, fresh_step, l1_grad

# ---- compile-time constants: every specialised copy has its own values
#: ``numba.cuda`` (or the simulator), bound by the builder.
cuda = None
#: Samples per batch (the length of register arrays).
BM = 1
#: Columns a lane handles per memory round trip (row-wise passes).
U = 4
#: Weight rows a thread reads per memory round trip (column-wise passes).
RU = 8
#: Running in numba's simulator (no warp shuffles).
SIM = False
#: A new Adam every step (the moments are neither read nor written).
FRESH = False
#: Software-pipelined update loop.
PIPE = False
#: Per-block buffers in a global scratch row instead of shared memory.
GLOB = False
#: Element types of local and shared arrays: numpy scalar types on the GPU,
#: dtype instances in the simulator (its dynamic shared array needs .itemsize).
_f32, _f64, _u8, _i64 = np.float32, np.float64, np.uint8, np.int64

_F = np.float32
_Z = np.float32(0.0)
_ONE = np.float32(1.0)
_INF = np.float32(np.inf)
_u = np.uint64
FULL = 0xFFFFFFFF
#: Most layers a half may have (the CONJUNCTIVE kernel keeps per-layer state
#: in a static shared array); ``NST`` the size of that state.
MAX_LAYERS = 32
NST = 3 * MAX_LAYERS


# ------------------------------------------------------------------ reductions


def warp_allsum_shfl(acc, sh, red, tid):
    """Sum each of ``acc[:BM]`` over the warp; every lane gets the sums."""
    for b in range(BM):
        x = acc[b]
        x += cuda.shfl_xor_sync(FULL, x, 16)
        x += cuda.shfl_xor_sync(FULL, x, 8)
        x += cuda.shfl_xor_sync(FULL, x, 4)
        x += cuda.shfl_xor_sync(FULL, x, 2)
        x += cuda.shfl_xor_sync(FULL, x, 1)
        acc[b] = x


def warp_allsum_sim(acc, sh, red, tid):
    """:func:`warp_allsum_shfl` for the simulator, which has no warp shuffles: a
    block-wide barrier version (every thread of the block reaches every call)."""
    # the reduction area holds BM x NT floats in the simulator (cuda._layout)
    NT = cuda.blockDim.x
    lane = tid % 32
    wb = tid - lane
    for b in range(BM):
        sh[red + b * NT + tid] = acc[b]
    cuda.syncthreads()
    for b in range(BM):
        s = _Z
        for j in range(32):
            s += sh[red + b * NT + wb + j]
        acc[b] = s
    cuda.syncthreads()


#: The builder binds ``warp_allsum`` to one of the two above.
warp_allsum = warp_allsum_shfl


# ------------------------------------------------------------------ layers


def adam(w, g, mk, m, v, ss, inv, b1, b2, e):
    """One entry of the masked Adam update (``kernels.contract``; FRESH: a new
    Adam every step, ``ss`` is then the lr and the moments stay 0)."""
    gk = g * _F(mk)
    if FRESH:
        return fresh_step(w, gk, ss, e), _Z, _Z
    m1, v1 = adam_moments(m, v, gk, b1, b2)
    return adam_step(w, m1, v1, ss, inv, e), m1, v1

def emit(z, b, o, W, zo, sh, B, mode, act, st, u0, with_stats, xo, do, scale):
    """Pre-activation ``z`` of unit ``o`` (layer width ``W``), sample ``b``.

    mode 0: hidden layer (stats, activation, store at ``zo``); 1: training
    output (also L1 and dLoss/dz at ``do``); 2: evaluation output (L1
    only).  Returns ``|y - x|`` (0 for hidden layers and padding samples)."""
    if with_stats and b < B:
        zd = np.float64(z)
        st[_u(u0 + o), 1] += zd
        st[_u(u0 + o), 2] += zd * zd
    if act == RELU:
        h = z
        if h < _Z:
            h = _Z
    else:
        h = _ONE / (_ONE + _F(math.exp(-z)))
    if mode == 0:
        sh[_u(zo + b * W + o)] = h
        return _Z
    if b >= B:
        if mode == 1:
            sh[_u(do + b * W + o)] = _Z
        return _Z
    d = h - sh[_u(xo + b * W + o)]
    if mode == 1:
        g = l1_grad(d, scale)
        if act == RELU:
            if h <= _Z:
                g = _Z
        else:
            g = g * (h * (_ONE - h))
        sh[_u(do + b * W + o)] = g
    return abs(d)

def fwd_row(Pp, w0, b0, R, C, hin, zo, sh, red, tid, NW):
    """Pre-activations of a layer stored (out, in) (R = n_out rows of
    C = n_in) -> ``zo`` (B x R): a warp per row, lanes along the row."""
    lane = tid % 32
    warp = tid // 32
    acc = cuda.local.array(BM, _f32)
    wv = cuda.local.array(U, _f32)
    rounds = (R + NW - 1) // NW
    for rd in range(rounds):
        r = rd * NW + warp
        for b in range(BM):
            acc[b] = _Z
        if r < R:
            base = w0 + r * C
            for c0 in range(lane, C, 32 * U):
                for u in range(U):
                    c = c0 + 32 * u
                    wv[u] = Pp[_u(base + c)] if c < C else _Z
                for u in range(U):
                    c = c0 + 32 * u
                    if c < C:
                        for b in range(BM):
                            acc[b] += wv[u] * sh[_u(hin + b * C + c)]
        warp_allsum(acc, sh, red, tid)  # every thread, every round
        if r < R:
            bias = Pp[_u(b0 + r)]
            for b in range(BM):
                if lane == b % 32:
                    sh[_u(zo + b * R + r)] = acc[b] + bias

def fwd_col(Pp, w0, b0, R, C, hin, zo, sh, tid, NT):
    """Pre-activations of a layer stored (in, out) (R = n_in rows of
    C = n_out) -> ``zo`` (B x C): a thread per output column (two at a
    time), ``RU`` rows per memory round trip."""
    acc = cuda.local.array(BM, _f32)
    acc2 = cuda.local.array(BM, _f32)
    wr = cuda.local.array(RU, _f32)
    wr2 = cuda.local.array(RU, _f32)
    for c in range(tid, C, 2 * NT):
        c2 = c + NT
        two = c2 < C
        bias = Pp[_u(b0 + c)]
        bias2 = Pp[_u(b0 + c2)] if two else _Z
        for b in range(BM):
            acc[b] = bias
            acc2[b] = bias2
        for r0 in range(0, R, RU):
            for j in range(RU):
                r = r0 + j
                wr[j] = Pp[_u(w0 + r * C + c)] if r < R else _Z
                wr2[j] = Pp[_u(w0 + r * C + c2)] if (two and r < R) else _Z
            for j in range(RU):
                r = r0 + j
                if r < R:
                    for b in range(BM):
                        hv = sh[_u(hin + b * R + r)]
                        acc[b] += hv * wr[j]
                        acc2[b] += hv * wr2[j]
        for b in range(BM):
            sh[_u(zo + b * C + c)] = acc[b]
            if two:
                sh[_u(zo + b * C + c2)] = acc2[b]

def fwd_layer(Pp, tab, kk, hin, zo, sh, red, tid, NT):
    """Pre-activations of layer ``kk`` of ``tab`` for BM samples -> ``zo``."""
    if tab[kk, COL_T] == 0:
        fwd_row(Pp, tab[kk, COL_W], tab[kk, COL_B], tab[kk, COL_OUT], tab[kk, COL_IN],
                hin, zo, sh, red, tid, NT // 32)
    else:
        fwd_col(Pp, tab[kk, COL_W], tab[kk, COL_B], tab[kk, COL_IN], tab[kk, COL_OUT],
                hin, zo, sh, tid, NT)

def post(sh, zo, W, B, mode, act, st, u0, with_stats, xo, scale, tid, NT):
    """Per unit (a thread each, samples in order): statistics, activation
    and, for the output layer, L1 and dLoss/dz -- in place at ``zo``
    (see ``emit``).  Returns this thread's sum of ``|y - x|``."""
    lp = _Z
    for o in range(tid, W, NT):
        for b in range(BM):
            lp += emit(sh[_u(zo + b * W + o)], b, o, W, zo, sh, B, mode, act, st, u0,
                       with_stats, xo, zo, scale)
    return lp

def dx_col(Pp, w0, R, C, dz, hp, dx, sh, tid, NT):
    """dLoss/dx through a layer stored (out, in) (R = n_out, C = n_in), with
    the previous layer's ReLU mask: a thread per input column."""
    acc = cuda.local.array(BM, _f32)
    wr = cuda.local.array(RU, _f32)
    for c in range(tid, C, NT):
        for b in range(BM):
            acc[b] = _Z
        for o0 in range(0, R, RU):
            for j in range(RU):
                o = o0 + j
                wr[j] = Pp[_u(w0 + o * C + c)] if o < R else _Z
            for j in range(RU):
                o = o0 + j
                if o < R:
                    for b in range(BM):
                        acc[b] += sh[_u(dz + b * R + o)] * wr[j]
        for b in range(BM):
            h = sh[_u(hp + b * C + c)]
            sh[_u(dx + b * C + c)] = acc[b] if h > _Z else _Z


def make_update(T0, WANT_DX, FUSE):
    """Weight gradient + masked Adam over R storage rows of C, a warp per
    row; the variant's flags are compile-time constants (fewer registers
    and branches in the hot loop).

    gradient[r, c] = sum_b rowval[b] * colval[b, c] with rowval at ``roff``
    (``B x R``) and colval at ``coff`` (``B x C``).  ``WANT_DX`` (layer
    stored (in, out)): also dLoss/dx[b, r] = sum_c w_old[r, c] colval[b, c]
    -> ``dxo`` with the ReLU mask of ``hpo``.  ``T0`` (layer stored (out,
    in)): the row's bias is updated here too.  ``FUSE``: next batch's
    pre-activation sum_c w_new[r, c] xnext[b, c] + new bias -> ``zno``."""

    def update_rows(Pp, Mk, Mm, Vv, w0, b0, R, C, roff, coff, dxo, hpo, xno, zno,
                    sh, red, ss, inv, b1, b2, e, tid, NW):
        lane = tid % 32
        warp = tid // 32
        rv = cuda.local.array(BM, _f32)
        dxa = cuda.local.array(BM, _f32)
        fza = cuda.local.array(BM, _f32)
        pw = cuda.local.array(U, _f32)
        pm = cuda.local.array(U, _f32)
        pv = cuda.local.array(U, _f32)
        pk = cuda.local.array(U, _u8)
        nw = cuda.local.array(U, _f32)  # prefetched next round trip (PIPE)
        nm = cuda.local.array(U, _f32)
        nv = cuda.local.array(U, _f32)
        nk = cuda.local.array(U, _u8)
        rounds = (R + NW - 1) // NW
        for rd in range(rounds):
            r = rd * NW + warp
            live = r < R
            for b in range(BM):
                rv[b] = sh[_u(roff + b * R + r)] if live else _Z
                dxa[b] = _Z
                fza[b] = _Z
            if live:
                base = w0 + r * C
                if PIPE:  # prologue: the first round trip's loads
                    for u in range(U):
                        c = lane + 32 * u
                        if c < C:
                            k = _u(base + c)
                            nw[u] = Pp[k]
                            nk[u] = Mk[k]
                            if not FRESH:
                                nm[u] = Mm[k]
                                nv[u] = Vv[k]
                for c0 in range(lane, C, 32 * U):
                    if PIPE:
                        # take the prefetched values and issue the next
                        # round trip's loads before computing this one
                        for u in range(U):
                            pw[u] = nw[u]
                            pk[u] = nk[u]
                            pm[u] = _Z if FRESH else nm[u]
                            pv[u] = _Z if FRESH else nv[u]
                        for u in range(U):
                            c = c0 + 32 * (U + u)
                            if c < C:
                                k = _u(base + c)
                                nw[u] = Pp[k]
                                nk[u] = Mk[k]
                                if not FRESH:
                                    nm[u] = Mm[k]
                                    nv[u] = Vv[k]
                    else:
                        for u in range(U):  # all loads of the round trip first
                            c = c0 + 32 * u
                            if c < C:
                                k = _u(base + c)
                                pw[u] = Pp[k]
                                pk[u] = Mk[k]
                                if FRESH:
                                    pm[u] = _Z
                                    pv[u] = _Z
                                else:
                                    pm[u] = Mm[k]
                                    pv[u] = Vv[k]
                    for u in range(U):
                        c = c0 + 32 * u
                        if c < C:
                            g = _Z
                            for b in range(BM):
                                g += rv[b] * sh[_u(coff + b * C + c)]
                            if WANT_DX:
                                for b in range(BM):
                                    dxa[b] += pw[u] * sh[_u(coff + b * C + c)]
                            w1, m1, v1 = adam(pw[u], g, pk[u], pm[u], pv[u], ss, inv, b1,
                                              b2, e)
                            if FUSE:
                                for b in range(BM):
                                    fza[b] += w1 * sh[_u(xno + b * C + c)]
                            pw[u] = w1
                            pm[u] = m1
                            pv[u] = v1
                    for u in range(U):
                        c = c0 + 32 * u
                        if c < C:
                            k = _u(base + c)
                            Pp[k] = pw[u]
                            if not FRESH:
                                Mm[k] = pm[u]
                                Vv[k] = pv[u]
            if WANT_DX:
                warp_allsum(dxa, sh, red, tid)
                if live and lane == 0:
                    for b in range(BM):
                        h = sh[_u(hpo + b * R + r)]
                        sh[_u(dxo + b * R + r)] = dxa[b] if h > _Z else _Z
            nb = _Z
            if T0 and live and lane == 0:
                gb = _Z
                for b in range(BM):
                    gb += rv[b]
                kb = _u(b0 + r)
                bm0 = _Z
                bv0 = _Z
                if not FRESH:
                    bm0 = Mm[kb]
                    bv0 = Vv[kb]
                nb, bm1, bv1 = adam(Pp[kb], gb, Mk[kb], bm0, bv0, ss, inv, b1, b2, e)
                Pp[kb] = nb
                if not FRESH:
                    Mm[kb] = bm1
                    Vv[kb] = bv1
            if FUSE:
                warp_allsum(fza, sh, red, tid)
                if live and lane == 0:
                    for b in range(BM):
                        sh[_u(zno + b * R + r)] = fza[b] + nb

    return update_rows


# the four compiled variants; the kernels call them by these names
upd_t0 = make_update(True, False, False)
upd_t0_fused = make_update(True, False, True)
upd_t1 = make_update(False, False, False)
upd_t1_dx = make_update(False, True, False)


def bias_cols(Pp, Mk, Mm, Vv, b0, C, dzo, sh, ss, inv, b1, b2, e, tid, NT):
    """Masked Adam on the biases of a layer stored (in, out): a thread per
    unit, ``U`` units per memory round trip."""
    pw = cuda.local.array(U, _f32)
    pm = cuda.local.array(U, _f32)
    pv = cuda.local.array(U, _f32)
    pk = cuda.local.array(U, _u8)
    for c0 in range(tid, C, NT * U):
        for u in range(U):
            c = c0 + NT * u
            if c < C:
                k = _u(b0 + c)
                pw[u] = Pp[k]
                pk[u] = Mk[k]
                pm[u] = _Z if FRESH else Mm[k]
                pv[u] = _Z if FRESH else Vv[k]
        for u in range(U):
            c = c0 + NT * u
            if c < C:
                g = _Z
                for b in range(BM):
                    g += sh[_u(dzo + b * C + c)]
                w1, m1, v1 = adam(pw[u], g, pk[u], pm[u], pv[u], ss, inv, b1, b2, e)
                k = _u(b0 + c)
                Pp[k] = w1
                if not FRESH:
                    Mm[k] = m1
                    Vv[k] = v1

def load_batch(X, orow, start, B, sh, off, D, tid, NT):
    """Rows ``orow[start:start + B]`` of ``X`` -> ``off`` (``BM x D``, zero
    padded); every row's loads are issued before the stores."""
    ri = cuda.local.array(BM, _i64)
    xv = cuda.local.array(BM, _f32)
    for b in range(BM):
        ri[b] = orow[_u(start + b)] if b < B else 0
    for j in range(tid, D, NT):
        for b in range(BM):
            xv[b] = X[_u(ri[b]), _u(j)] if b < B else _Z
        for b in range(BM):
            sh[_u(off + b * D + j)] = xv[b]

def load_rows(X, start, B, sh, off, D, tid, NT):
    xv = cuda.local.array(BM, _f32)
    for j in range(tid, D, NT):
        for b in range(BM):
            xv[b] = X[_u(start + b), _u(j)] if b < B else _Z
        for b in range(BM):
            sh[_u(off + b * D + j)] = xv[b]

"""The CUDA evaluation and CONJUNCTIVE kernels: one thread block per pair.

Plain Python functions, specialised and compiled by ``kernels/cuda_build.py``
like the device functions of ``kernels/cuda_device.py`` they call.
"""

import math

import numpy as np

from sparseae._options import COL_ACT, COL_OUT, COL_UNIT, RELU
from sparseae.kernels.contract import marked
from sparseae.kernels.cuda_device import (
    _INF,
    _ONE,
    _Z,
    BM,
    GLOB,
    NST,
    _F,
    _f32,
    _f64,
    _i64,
    cuda,
    fwd_layer,
    load_batch,
    load_rows,
    post,
)

#: Threads per block of :func:`population` (a power of two).
POP_THREADS = 128


def block_minmax(sh, zo, n, red, tid, NT):
    lo = _INF
    hi = -_INF
    for o in range(tid, n, NT):
        z = sh[zo + o]
        if z < lo:
            lo = z
        if z > hi:
            hi = z
    sh[red + tid] = lo
    sh[red + NT + tid] = hi
    cuda.syncthreads()
    s = NT // 2
    while s > 0:
        if tid < s:
            a = sh[red + tid + s]
            if a < sh[red + tid]:
                sh[red + tid] = a
            a = sh[red + NT + tid + s]
            if a > sh[red + NT + tid]:
                sh[red + NT + tid] = a
        cuda.syncthreads()
        s //= 2
    lo = sh[red]
    hi = sh[red + NT]
    cuda.syncthreads()
    return lo, hi

def block_count(c, sh, red, tid, NT):
    sh[red + tid] = _F(c)  # counts stay far below 2**24: exact
    cuda.syncthreads()
    s = NT // 2
    while s > 0:
        if tid < s:
            sh[red + tid] += sh[red + tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[red]
    cuda.syncthreads()
    return int(total)

def conj_update(sh, zo, n, marks, u0, state, k, thr, red, tid, NT):
    """cpu.conjunctive_update for one sample's layer ``k`` (z at ``zo``)."""
    seen = state[3 * k]
    cnt = state[3 * k + 1]
    stopped = state[3 * k + 2]
    lo, hi = block_minmax(sh, zo, n, red, tid, NT)
    if stopped != 0:
        return
    if seen > 0 and cnt <= 1:
        if tid == 0:
            state[3 * k + 2] = 1
        return
    span = hi - lo
    first = seen == 0
    c = 0
    for o in range(tid, n, NT):
        sel = 1 if marked(sh[zo + o], lo, span, thr) else 0
        if first:
            marks[u0 + o] = sel
        elif sel == 0:
            marks[u0 + o] = 0
        c += marks[u0 + o]
    total = block_count(c, sh, red, tid, NT)
    if tid == 0:
        state[3 * k] = seen + 1
        state[3 * k + 1] = total


def evaluate(PE, le, PD, ld, X, rows, ri, pe_idx, pd_idx, so, dst, part, out, scratch):
    """Block ``q``: the mean L1 over the rows ``rows[ri[q]]`` of ``X`` of encoder
    row ``pe_idx[q]`` with decoder row ``pd_idx[q]``, ``BM`` rows at a time."""
    q = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    NT = cuda.blockDim.x
    if GLOB:
        sh = scratch[q]
    else:
        sh = cuda.shared.array(0, _f32)
    Le = le.shape[0]
    Lt = Le + ld.shape[0]
    PEp = PE[pe_idx[q]]
    PDp = PD[pd_idx[q]]
    orow = rows[ri[q]]
    N = rows.shape[1]
    F = X.shape[1]
    x0 = so[0]
    red = so[2]
    st = dst[0]
    lacc = 0.0
    for start in range(0, N, BM):
        B = min(BM, N - start)
        load_batch(X, orow, start, B, sh, x0, F, tid, NT)
        cuda.syncthreads()
        lp = _Z
        for k in range(Lt):
            if k < Le:
                Pp = PEp
                tab = le
                kk = k
            else:
                Pp = PDp
                tab = ld
                kk = k - Le
            hin = x0 if k == 0 else so[1 + 2 * k]
            zo = so[3 + 2 * k]
            fwd_layer(Pp, tab, kk, hin, zo, sh, red, tid, NT)
            cuda.syncthreads()
            lp += post(sh, zo, tab[kk, COL_OUT], B, 2 if k == Lt - 1 else 0,
                       tab[kk, COL_ACT], st, 0, False, x0, _ONE, tid, NT)
            cuda.syncthreads()
        lacc += np.float64(lp)
    part[q, tid] = lacc
    cuda.syncthreads()
    if tid == 0:
        tot = 0.0
        for j in range(NT):
            tot += part[q, j]
        out[q] = tot / (N * F)


def conjunctive(PE, le, PD, ld, X, thr, so, dst, marks_e, marks_d, scratch):
    """Block ``p``: the CONJUNCTIVE marks of pair ``p`` over the rows of ``X``
    in order, one sample at a time (``cpu.conjunctive_marks``); stops once
    every layer has stopped."""
    p = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    NT = cuda.blockDim.x
    if GLOB:
        sh = scratch[p]
    else:
        sh = cuda.shared.array(0, _f32)
    state = cuda.shared.array(NST, _i64)
    Le = le.shape[0]
    Lt = Le + ld.shape[0]
    PEp = PE[p]
    PDp = PD[p]
    Mep = marks_e[p]
    Mdp = marks_d[p]
    N = X.shape[0]
    F = X.shape[1]
    x0 = so[0]
    red = so[2]
    for j in range(tid, 3 * Lt, NT):
        state[j] = 0
    cuda.syncthreads()
    for r in range(N):
        load_rows(X, r, 1, sh, x0, F, tid, NT)
        cuda.syncthreads()
        for k in range(Lt):
            if k < Le:
                Pp = PEp
                tab = le
                kk = k
                mk = Mep
            else:
                Pp = PDp
                tab = ld
                kk = k - Le
                mk = Mdp
            hin = x0 if k == 0 else so[1 + 2 * k]
            zo = so[3 + 2 * k]
            W = tab[kk, COL_OUT]
            fwd_layer(Pp, tab, kk, hin, zo, sh, red, tid, NT)
            cuda.syncthreads()
            conj_update(sh, zo, W, mk, tab[kk, COL_UNIT], state, k, thr, red, tid, NT)
            act = tab[kk, COL_ACT]
            for o in range(tid, W, NT):
                z = sh[zo + o]
                if act == RELU:
                    if z < _Z:
                        sh[zo + o] = _Z
                else:
                    sh[zo + o] = _ONE / (_ONE + _F(math.exp(-z)))
            cuda.syncthreads()
        done = True
        for k in range(Lt):
            if state[3 * k + 2] == 0:
                done = False
        if done:
            break


def population(params, masks, n, pairs, d2, ov):
    """Block ``b`` of ``R * len(pairs)``: for run ``r = b // len(pairs)`` and the
    pair ``(i, j)`` of its ``n`` consecutive rows, the squared L2 distance of the
    parameter rows (float64 differences) and the count of entries live in both
    masks, into ``d2[r, i, j]`` / ``ov[r, i, j]`` and their mirrors."""
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    r = b // pairs.shape[0]
    i = r * n + pairs[b % pairs.shape[0], 0]
    j = r * n + pairs[b % pairs.shape[0], 1]
    sd = cuda.shared.array(POP_THREADS, _f64)
    so = cuda.shared.array(POP_THREADS, _i64)
    acc = 0.0
    cnt = 0
    for k in range(tid, params.shape[1], POP_THREADS):
        d = np.float64(params[i, k]) - np.float64(params[j, k])
        acc += d * d
        if masks[i, k] != 0 and masks[j, k] != 0:
            cnt += 1
    sd[tid] = acc
    so[tid] = cnt
    cuda.syncthreads()
    s = POP_THREADS // 2
    while s > 0:
        if tid < s:
            sd[tid] += sd[tid + s]
            so[tid] += so[tid + s]
        cuda.syncthreads()
        s //= 2
    if tid == 0:
        li = pairs[b % pairs.shape[0], 0]
        lj = pairs[b % pairs.shape[0], 1]
        d2[r, li, lj] = sd[0]
        d2[r, lj, li] = sd[0]
        ov[r, li, lj] = so[0]
        ov[r, lj, li] = so[0]

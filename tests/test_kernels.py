"""The numba CPU kernels (``sparseae.kernels.cpu``) against the float64 NumPy
oracle in ``tests/oracle.py``, on fresh random inputs of odd sizes.

Architectures (7, 13, 3) and (11, 5, 2) give both weight storage orientations
(a layer is stored transposed when ``n_out > n_in``) in both halves.
"""

import numpy as np
import pytest

import oracle
from sparseae._options import (
    ADAM_BETAS,
    ADAM_EPS,
    COL_T,
    RELU,
    SIGMOID,
)
from sparseae.kernels import cpu
from sparseae.kernels import cpu_layers as kl
from sparseae.kernels.contract import AdamConfig
from sparseae.model import Architecture, Arena

F32 = np.float32
B1, B2 = ADAM_BETAS
EPS = ADAM_EPS
SIZES = [(7, 13, 3), (11, 5, 2), (9, 13, 5, 3)]  # the last: 3 layers per half
BATCHES = [1, 3, 5, 9]

# float32 kernel vs float64 oracle
RTOL, ATOL = 1e-5, 1e-6


# --------------------------------------------------------------------- helpers


def make_pair(sizes, seed, P=1):
    arch = Architecture(sizes)
    enc = Arena(arch.encoder_shapes(), P)
    dec = Arena(arch.decoder_shapes(), P)
    rng = np.random.default_rng(seed)
    enc.init(rng)
    dec.init(rng)
    return enc, dec


def one_layer(n_in, n_out, act, seed):
    a = Arena([(n_in, n_out, act)], 1)
    a.init(np.random.default_rng(seed))
    return a


def data(rng, N, D):
    return rng.uniform(0.0, 1.0, (N, D)).astype(F32)


def k_half_forward(arena, p, X, stats=None, marks=None, cstate=None, conj=False, C=0.0):
    """Kernel forward of a flat batch; returns (output (B, out), hbuf, hoff)."""
    X = np.ascontiguousarray(X, F32)
    B = X.shape[0]
    lay = arena.table
    hoff = kl.buffer_offsets(lay, B)
    hbuf = np.full(hoff[-1], np.nan, F32)
    with_stats = stats is not None
    if stats is None:
        stats = np.zeros((arena.n_units, 3))
    if marks is None:
        marks = np.zeros(arena.n_units, np.uint8)
    if cstate is None:
        cstate = np.zeros((arena.n_layers, 3), np.int64)
    y = kl.half_forward(p, lay, X.ravel(), B, hbuf, hoff,
                        (stats, marks, cstate, with_stats, conj, C),
                        np.empty(kl.max_width(lay), np.int32))
    return y.reshape(B, -1).copy(), hbuf, hoff


def k_loss_grad(enc, pe, dec, pd, X):
    """The kernel gradient of the L1 loss, obtained as ``train_epoch`` does."""
    X = np.ascontiguousarray(X, F32)
    B, D = X.shape
    x = X.ravel().copy()
    code, hbuf_e, hoff_e = k_half_forward(enc, pe, X)
    y, hbuf_d, hoff_d = k_half_forward(dec, pd, code)
    dy = np.empty(B * D, F32)
    loss = kl.l1_loss_grad(y.ravel().copy(), x, dy, B * D, 1.0 / (B * D))
    mw = max(kl.max_width(enc.table), kl.max_width(dec.table))
    work = np.full(2 * B * mw, np.nan, F32)
    gd = np.full(dec.n, np.nan, F32)
    ge = np.full(enc.n, np.nan, F32)
    code_flat = code.ravel().copy()
    dcode = kl.half_backward(pd, dec.table, code_flat, B, hbuf_d, hoff_d, dy, gd, work, True)
    dc = dcode.copy()
    dx = kl.half_backward(pe, enc.table, x, B, hbuf_e, hoff_e, dc, ge, work, True)
    return float(loss), ge, gd, dx.reshape(B, D).copy()


def all_normalised(zs):
    """Every finite normalised pre-activation of a list of (N, units) arrays."""
    vals = [oracle.normalised(z).ravel() for z in zs]
    v = np.concatenate(vals)
    return v[np.isfinite(v)]


def safe_threshold(zs, lo, hi):
    """The threshold in [lo, hi] farthest from every normalised value, so that
    float32 rounding cannot flip a mark; asserts a clear margin."""
    v = all_normalised(zs)
    cands = np.linspace(lo, hi, 201)
    dist = np.array([np.min(np.abs(v - c)) if v.size else 1.0 for c in cands])
    k = int(np.argmax(dist))
    assert dist[k] > 1e-4, "no threshold with a safe margin; change the seed"
    return float(cands[k])


def relu_margin(zs_list):
    """Smallest |z| over the ReLU layers' pre-activations."""
    return min(np.min(np.abs(z)) for z in zs_list)


# --------------------------------------------------------------------- dense_forward


LAYER_CASES = [(7, 13), (13, 7), (5, 9), (9, 5), (6, 6)]


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("act", [RELU, SIGMOID])
@pytest.mark.parametrize("n_in,n_out", LAYER_CASES)
def test_dense_forward(n_in, n_out, act, B):
    rng = np.random.default_rng(1000 + 10 * n_in + n_out + 7 * act + B)
    a = one_layer(n_in, n_out, act, rng.integers(1 << 30))
    assert a.table[0, COL_T] == (1 if n_out > n_in else 0)
    p = a.params[0]
    W, bias, _ = oracle.views(a.shapes, p)[0]

    stats = np.zeros((n_out, 3))
    marks = np.zeros(n_out, np.uint8)
    cstate = np.zeros((1, 3), np.int64)
    zs = []
    for call in range(2):
        x = rng.normal(size=(B, n_in)).astype(F32)
        x[rng.random(x.shape) < 0.3] = 0.0  # ReLU-like zeros (the skip path)
        h = np.full(B * n_out, np.nan, F32)
        kl.dense_forward(p, a.table, 0, x.ravel(), h, B, (stats, marks, cstate, True, False, 0.0),
                         np.empty(n_out, np.int32))
        z, href = oracle.layer_forward(W, bias, x, act)
        zs.append(z)
        assert h.dtype == F32
        np.testing.assert_allclose(h.reshape(B, n_out), href, rtol=RTOL, atol=ATOL)
        if act == RELU:
            assert np.all(h >= 0)
            # exact zeros where the pre-activation is clearly negative
            assert np.all(h.reshape(B, n_out)[z < -1e-4] == 0)
    # fused VARIANCE stats over both calls vs a separate NumPy computation
    Z = np.concatenate(zs)
    np.testing.assert_array_equal(stats[:, 0], np.full(n_out, 2 * B))
    np.testing.assert_allclose(stats[:, 1], Z.sum(0), rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(stats[:, 2], (Z * Z).sum(0), rtol=RTOL, atol=1e-5)
    # conj disabled: the marks and their state are untouched
    assert not marks.any() and not cstate.any()


@pytest.mark.parametrize("n_in,n_out", [(7, 13), (13, 7)])
def test_dense_forward_without_stats_leaves_stats(n_in, n_out):
    rng = np.random.default_rng(5)
    a = one_layer(n_in, n_out, RELU, 6)
    stats = rng.normal(size=(n_out, 3))
    before = stats.copy()
    x = rng.normal(size=3 * n_in).astype(F32)
    h = np.empty(3 * n_out, F32)
    kl.dense_forward(a.params[0], a.table, 0, x, h, 3,
                     (stats, np.zeros(n_out, np.uint8), np.zeros((1, 3), np.int64), False, False,
                      0.0), np.empty(n_out, np.int32))
    np.testing.assert_array_equal(stats, before)


@pytest.mark.parametrize("n_in,n_out", [(7, 13), (13, 7)])
def test_dense_forward_conjunctive_path(n_in, n_out):
    """``conj=True`` feeds every sample's PRE-activation, in order, to the rule."""
    rng = np.random.default_rng(77 + n_in)
    a = one_layer(n_in, n_out, RELU, 78 + n_in)
    W, bias, _ = oracle.views(a.shapes, a.params[0])[0]
    B = 5
    x = rng.normal(size=(B, n_in)).astype(F32)
    z, _ = oracle.layer_forward(W, bias, x, RELU)
    C = safe_threshold([z], 0.6, 0.95)
    marks = np.zeros(n_out, np.uint8)
    cstate = np.zeros((1, 3), np.int64)
    h = np.empty(B * n_out, F32)
    kl.dense_forward(a.params[0], a.table, 0, x.ravel(), h, B,
                     (np.zeros((n_out, 3)), marks, cstate, False, True, C),
                     np.empty(n_out, np.int32))
    ref, used, stopped = oracle.conjunctive(z, C)
    np.testing.assert_array_equal(marks.astype(bool), ref)
    assert cstate[0].tolist() == [used, ref.sum(), int(stopped)]


# --------------------------------------------------------------------- CONJUNCTIVE


def run_conj(Z, C):
    Z = np.asarray(Z, F32)
    marks = np.full(Z.shape[1], 7, np.uint8)  # garbage: the first sample sets them
    state = np.zeros(3, np.int64)
    for z in Z:
        kl.conjunctive_update(z, marks, state, C)
    return marks, state


def test_conjunctive_all_marked():
    rng = np.random.default_rng(11)
    Z = rng.normal(size=(6, 9))
    marks, state = run_conj(Z, 1.5)  # every normalised value is < 1.5
    assert marks.tolist() == [1] * 9
    assert state.tolist() == [6, 9, 0]


def test_conjunctive_none_marked():
    rng = np.random.default_rng(12)
    Z = rng.normal(size=(4, 9))
    marks, state = run_conj(Z, 0.0)  # nothing is < 0
    assert marks.tolist() == [0] * 9
    # 0 marks after the first sample: the second one stops the layer
    assert state.tolist() == [1, 0, 1]


def test_conjunctive_early_stop_after_first_sample():
    Z = np.array([
        [0.0, 1.0, 1.0, 0.9, 1.0],   # only unit 0 normalises below 0.5
        [1.0, 0.0, 0.0, 0.0, 0.1],   # would clear unit 0 and mark the others
        [1.0, 0.0, 0.0, 0.0, 0.0],
    ])
    marks, state = run_conj(Z, 0.5)
    assert marks.tolist() == [1, 0, 0, 0, 0]
    assert state.tolist() == [1, 1, 1]
    ref, used, stopped = oracle.conjunctive(Z, 0.5)
    assert marks.astype(bool).tolist() == ref.tolist() and used == 1 and stopped


def test_conjunctive_stop_in_the_middle():
    Z = np.array([
        [0.0, 0.1, 0.2, 1.0, 0.3, 0.9, 0.05],   # marks units 0, 1, 2, 4, 6
        [0.0, 1.0, 0.1, 0.2, 1.0, 0.8, 0.0],    # AND -> units 0, 2, 6
        [1.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.8],    # AND -> nothing of 0, 2, 6 survives but...
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ])
    # sample 3 keeps none of {0, 2, 6} -> count 0, sample 4 is never used
    marks, state = run_conj(Z, 0.5)
    ref, used, stopped = oracle.conjunctive(Z, 0.5)
    assert ref.sum() == 0 and used == 3 and stopped
    assert marks.tolist() == [0] * 7
    assert state.tolist() == [3, 0, 1]

    Z2 = Z.copy()
    Z2[2] = [0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 1.0]  # keeps unit 0 only -> count 1
    Z2[3] = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # would keep unit 0, but is ignored
    Z2 = np.vstack([Z2, [1.0, 0, 0, 0, 0, 0, 0]])  # would clear it: ignored too
    marks, state = run_conj(Z2, 0.5)
    assert marks.tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert state.tolist() == [3, 1, 1]


def test_conjunctive_constant_sample_marks_nothing():
    Z = np.array([
        [0.0, 0.1, 1.0, 0.2, 0.9],    # marks 0, 1, 3
        [0.4, 0.4, 0.4, 0.4, 0.4],    # constant: marks nothing -> AND clears all
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ])
    marks, state = run_conj(Z, 0.5)
    assert marks.tolist() == [0] * 5
    assert state.tolist() == [2, 0, 1]
    # a constant first sample: nothing marked, the next sample stops the layer
    marks, state = run_conj(Z[[1, 0, 2]], 0.5)
    assert marks.tolist() == [0] * 5
    assert state.tolist() == [1, 0, 1]
    # a constant (even all-zero) sample with a huge threshold still marks nothing
    marks, state = run_conj(np.zeros((2, 5)), 2.0)
    assert marks.tolist() == [0] * 5


@pytest.mark.parametrize("seed", range(8))
def test_conjunctive_random_vs_oracle(seed):
    rng = np.random.default_rng(100 + seed)
    n = [5, 7, 9, 13, 3, 11, 13, 9][seed]
    N = 3 + seed
    # correlated samples, so that marks survive several ANDs (with flips)
    base = rng.normal(size=n)
    Z = (base + 0.4 * rng.normal(size=(N, n))).astype(F32).astype(np.float64)
    if seed % 2:
        Z[rng.integers(N)] = 0.25  # a constant sample somewhere
    C = safe_threshold([Z], 0.3 + 0.08 * seed, 0.95)
    marks, state = run_conj(Z, C)
    ref, used, stopped = oracle.conjunctive(Z, C)
    np.testing.assert_array_equal(marks.astype(bool), ref)
    # the stop is noticed when a further sample arrives, as in the oracle
    assert state.tolist() == [used, int(ref.sum()), int(stopped)]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("N,lo,hi", [(4, 0.2, 0.5), (6, 0.5, 0.8), (9, 0.8, 0.98)])
def test_conjunctive_marks_vs_oracle(sizes, N, lo, hi):
    seed = 300 + N + sizes[0]
    enc, dec = make_pair(sizes, seed)
    X = data(np.random.default_rng(seed + 1), N, sizes[0])
    ze, he = oracle.half_forward(enc.shapes, enc.params[0], X)
    zd, _ = oracle.half_forward(dec.shapes, dec.params[0], he[-1])
    C = safe_threshold(ze + zd, lo, hi)
    me, md = cpu.conjunctive_marks(enc.params[0], enc.table, dec.params[0], dec.table, X, C)
    assert me.dtype == np.uint8 and md.dtype == np.uint8
    ref_e = np.concatenate([oracle.conjunctive(z, C)[0] for z in ze])
    ref_d = np.concatenate([oracle.conjunctive(z, C)[0] for z in zd])
    np.testing.assert_array_equal(me.astype(bool), ref_e)
    np.testing.assert_array_equal(md.astype(bool), ref_d)


def test_conjunctive_marks_per_layer_all_and_none():
    enc, dec = make_pair((7, 13, 3), 9)
    X = data(np.random.default_rng(10), 5, 7)
    me, md = cpu.conjunctive_marks(enc.params[0], enc.table, dec.params[0], dec.table, X, 1.5)
    # nothing constant here, so every unit of every layer is marked
    assert me.all() and md.all() and me.size == 16 and md.size == 20
    me, md = cpu.conjunctive_marks(enc.params[0], enc.table, dec.params[0], dec.table, X, 0.0)
    assert not me.any() and not md.any()


# ------------------------------------------------- blocked building blocks of the layers


@pytest.mark.parametrize("na,n,B", [(1, 3, 1), (5, 67, 3), (7, 131, 9), (2, 1000, 5)])
def test_row_dots_blocks_match_float64(na, n, B):
    """Every row pair x batch quad, the leftover rows and the odd last row of A."""
    rng = np.random.default_rng(na * 1000 + n + B)
    A = rng.normal(size=(na, n)).astype(F32)
    X = rng.normal(size=(B, n)).astype(F32)
    sb = na + 2  # outputs interleaved with a stride; the gaps stay untouched
    out = np.full(B * sb, 99.0, F32)
    kl.row_dots(A.ravel(), na, X.ravel(), n, B, out, sb)
    got = out.reshape(B, sb)
    ref = X.astype(np.float64) @ A.astype(np.float64).T
    np.testing.assert_allclose(got[:, :na], ref, rtol=1e-5, atol=1e-5 * np.sqrt(n))
    assert np.all(got[:, na:] == 99.0)


@pytest.mark.parametrize("n", [5, 63, 64, 203])  # both sides of the grouping threshold
@pytest.mark.parametrize("k,zeros", [(1, 0.0), (3, 0.0), (4, 0.0), (9, 0.4), (13, 1.0)])
def test_combine_rows_matches_float64_and_skips_zeros(n, k, zeros):
    rng = np.random.default_rng(n * 100 + k)
    A = rng.normal(size=(k, n)).astype(F32)
    cs = 3  # coefficients read with a stride, from an offset
    c = rng.normal(size=1 + k * cs).astype(F32)
    coef = c[1::cs][:k]
    coef[rng.random(k) < zeros] = 0.0
    c[1::cs][:k] = coef
    A[coef == 0] = np.nan  # a row with coefficient 0 is never read
    y = np.full(n, 7.0, F32)  # overwritten, not accumulated
    kl.combine_rows(y, A.ravel(), n, c, 1, cs, k)
    live = coef != 0
    ref = coef[live].astype(np.float64) @ A[live].astype(np.float64) if live.any() else 0 * y
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * k)
    if not live.any():
        assert np.all(y == 0) and not np.signbit(y).any()


# --------------------------------------------------------------------- dense_backward


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("act", [RELU, SIGMOID])
@pytest.mark.parametrize("n_in,n_out", LAYER_CASES)
def test_dense_backward(n_in, n_out, act, B):
    rng = np.random.default_rng(2000 + 10 * n_in + n_out + 7 * act + B)
    a = one_layer(n_in, n_out, act, rng.integers(1 << 30))
    p = a.params[0]
    W, bias, _ = oracle.views(a.shapes, p)[0]
    x = rng.normal(size=(B, n_in)).astype(F32)
    x[rng.random(x.shape) < 0.25] = 0.0
    z, href = oracle.layer_forward(W, bias, x, act)
    assert np.min(np.abs(z)) > 1e-5  # no ReLU kink ambiguity between f32 and f64
    h = np.empty(B * n_out, F32)
    kl.dense_forward(p, a.table, 0, x.ravel(), h, B, kl.no_fusion(a.table),
                     np.empty(n_out, np.int32))
    dh = rng.normal(size=(B, n_out)).astype(F32)
    dh_k = dh.ravel().copy()
    g = np.full(a.n, 123.0, F32)  # garbage: the gradient is written, not accumulated
    dx = np.full(B * n_in, 456.0, F32)
    kl.dense_backward(p, a.table, 0, x.ravel(), h, dh_k, B, g, dx, True)

    gW_ref, gb_ref, dx_ref = oracle.layer_backward(W, x, href, act, dh.astype(np.float64))
    gW_k, gb_k, _ = oracle.views(a.shapes, g)[0]  # (out, in) view whatever the storage
    np.testing.assert_allclose(gW_k, gW_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gb_k, gb_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx.reshape(B, n_in), dx_ref, rtol=RTOL, atol=ATOL)
    # dh now holds dLoss/dz
    dz_ref = dh * (href > 0) if act == RELU else dh * href * (1 - href)
    np.testing.assert_allclose(dh_k.reshape(B, n_out), dz_ref, rtol=RTOL, atol=ATOL)

    # need_dx=False leaves dx alone and gives the same parameter gradient
    dx2 = np.full(B * n_in, 456.0, F32)
    g2 = np.full(a.n, -9.0, F32)
    kl.dense_backward(p, a.table, 0, x.ravel(), h, dh.ravel().copy(), B, g2, dx2, False)
    assert np.all(dx2 == 456.0)
    np.testing.assert_array_equal(g2, g)


# --------------------------------------------------------------------- L1 loss


@pytest.mark.parametrize("B,D", [(3, 7), (5, 11)])
def test_l1_loss_grad(B, D):
    rng = np.random.default_rng(40 + B)
    x = rng.uniform(0, 1, B * D).astype(F32)
    y = rng.uniform(0, 1, B * D).astype(F32)
    eq = rng.random(B * D) < 0.3
    y[eq] = x[eq]
    dy = np.full(B * D, np.nan, F32)
    scale = 1.0 / (B * D)
    loss = kl.l1_loss_grad(y, x, dy, B * D, scale)
    ref, gref = oracle.l1_loss_grad(y, x)
    assert loss == pytest.approx(ref, rel=1e-6)
    np.testing.assert_allclose(dy, gref, rtol=1e-6, atol=0)
    assert np.all(dy[eq] == 0.0)
    assert np.all(dy[y > x] == F32(scale)) and np.all(dy[y < x] == -F32(scale))
    # only the first n entries are touched
    dy2 = np.full(B * D, 5.0, F32)
    kl.l1_loss_grad(y, x, dy2, D, scale)
    assert np.all(dy2[D:] == 5.0)


# --------------------------------------------------------------------- Adam


def adam_arrays(n, rng):
    p = rng.normal(size=n).astype(F32)
    return p, np.ones(n, np.uint8), np.zeros(n, F32), np.zeros(n, F32), np.zeros(1, np.int64)


@pytest.mark.parametrize("n", [7, 31])
def test_adam_persistent_vs_oracle(n):
    rng = np.random.default_rng(50 + n)
    p, mask, m, v, step = adam_arrays(n, rng)
    mask[rng.random(n) < 0.3] = 0
    lr = 1e-2
    ref = oracle.Adam(n, lr, B1, B2, EPS)
    pref = p.astype(np.float64)
    for t in range(1, 7):
        g = rng.normal(size=n).astype(F32)
        g[rng.random(n) < 0.1] = 0.0
        kl.adam_update(p, g, mask, m, v, step, lr, AdamConfig(B1, B2, EPS, False))
        ref.step(pref, g, mask)
        assert step[0] == t
        np.testing.assert_allclose(p, pref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(m, ref.m, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(v, ref.v, rtol=1e-4, atol=1e-12)


def test_adam_fresh_vs_oracle():
    rng = np.random.default_rng(60)
    n = 23
    p, mask, m, v, step = adam_arrays(n, rng)
    mask[::4] = 0
    # stale state that fresh mode must ignore
    m[:] = rng.normal(size=n)
    v[:] = rng.uniform(0.1, 1.0, n)
    stale_m, stale_v = m.copy(), v.copy()
    step[0] = 7
    lr = 1e-2
    ref = oracle.Adam(n, lr, B1, B2, EPS, fresh=True)
    pref = p.astype(np.float64)
    for _ in range(4):
        g = rng.normal(size=n).astype(F32)
        p_before = p.copy()
        kl.adam_update(p, g, mask, m, v, step, lr, AdamConfig(B1, B2, EPS, True))
        ref.step(pref, g, mask)
        assert step[0] == 1
        # neither read nor written (train_epoch zeroes them once per epoch)
        assert np.array_equal(m, stale_m) and np.array_equal(v, stale_v)
        np.testing.assert_allclose(p, pref, rtol=1e-6, atol=1e-6)
        # a fresh Adam step is about lr * sign(g) on live entries, 0 on pruned ones
        live = mask.astype(bool)
        np.testing.assert_allclose((p_before - p)[live], lr * np.sign(g[live]), rtol=1e-3)
        assert np.all(p[~live] == p_before[~live])


def test_adam_fresh_step_matches_the_moment_form_at_every_magnitude():
    """The fresh step is written ``lr g / (|g| + eps)``; PyTorch's moment form (the
    float64 oracle) must give the same update from 1e-30 to 1e3, around eps too."""
    rng = np.random.default_rng(61)
    n = 67
    g = (np.sign(rng.normal(size=n)) * 10.0 ** rng.uniform(-30, 3, n)).astype(F32)
    g[:5] = np.array([1e-8, -1e-8, 3e-9, 0.0, -2e-7], F32)
    p, mask, m, v, step = adam_arrays(n, rng)
    p[:] = 0.0  # the update itself, not rounded into a weight of size 1
    mask[-3:] = 0
    lr = 3e-3
    kl.adam_update(p, g, mask, m, v, step, lr, AdamConfig(B1, B2, EPS, True))
    pref = np.zeros(n)
    oracle.Adam(n, lr, B1, B2, EPS, fresh=True).step(pref, g, mask)
    np.testing.assert_allclose(p, pref, rtol=2e-6, atol=0)
    assert np.all(p[-3:] == 0.0) and p[3] == 0.0


@pytest.mark.parametrize("fresh", [False, True])
def test_adam_masked_entries_stay_exactly_zero(fresh):
    rng = np.random.default_rng(70 + fresh)
    n = 101
    p, mask, m, v, step = adam_arrays(n, rng)
    dead = rng.random(n) < 0.3
    assert 10 < dead.sum() < 60
    mask[dead] = 0
    p[dead] = 0.0
    for _ in range(100):
        g = rng.normal(size=n).astype(F32)  # nonzero gradients on pruned entries too
        prev = p.copy()
        kl.adam_update(p, g, mask, m, v, step, 1e-2, AdamConfig(B1, B2, EPS, fresh))
        # live entries move at every step
        assert np.all(p[~dead] != prev[~dead])
    assert np.all(p[dead] == 0.0)
    assert np.all(m[dead] == 0.0) and np.all(v[dead] == 0.0)
    if not fresh:
        assert np.all(v[~dead] > 0)
        assert step[0] == 100
    else:
        assert step[0] == 1


# --------------------------------------------------------------------- train_epoch


def masked_pair(sizes, seed, frac=0.2):
    """A pair with ~``frac`` of every row pruned (params and moments zeroed)."""
    enc, dec = make_pair(sizes, seed)
    rng = np.random.default_rng(seed + 1)
    for a in (enc, dec):
        dead = rng.random(a.n) < frac
        a.mask[0, dead] = 0
        a.params[0, dead] = 0.0
    return enc, dec


def k_train_epoch(enc, dec, X, order, bs, lr, fresh, stats_e, stats_d, with_stats=True):
    return cpu.train_epoch(enc.half(0), dec.half(0), X, order, bs, lr,
                           AdamConfig(B1, B2, EPS, fresh), (stats_e, stats_d), with_stats)


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("sizes", SIZES)
def test_train_epoch_vs_oracle(sizes, fresh):
    seed = 400 + sizes[0] + 2 * fresh
    enc, dec = masked_pair(sizes, seed)
    rng = np.random.default_rng(seed + 5)
    N, bs, lr = 10, 3, 1e-2
    X = data(rng, N, sizes[0])
    order = rng.permutation(N)
    pe0, pd0 = enc.params[0].copy(), dec.params[0].copy()
    me, md = enc.mask[0].copy(), dec.mask[0].copy()

    ref = oracle.train_epoch(enc.shapes, pe0, me, dec.shapes, pd0, md, X, order, bs, lr,
                             B1, B2, EPS, fresh)
    assert len(ref["losses"]) == 4  # 3 + 3 + 3 + 1

    # step by step: a one-batch slice of ``order`` is one Adam step
    e1, d1 = masked_pair(sizes, seed)
    se1, sd1 = np.zeros((e1.n_units, 3)), np.zeros((d1.n_units, 3))
    for k, start in enumerate(range(0, N, bs)):
        loss = k_train_epoch(e1, d1, X, order[start:start + bs], bs, lr, fresh, se1, sd1)
        assert loss == pytest.approx(ref["losses"][k], rel=1e-5)
        pe_ref, pd_ref = ref["snapshots"][k]
        np.testing.assert_allclose(e1.params[0], pe_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d1.params[0], pd_ref, rtol=1e-4, atol=1e-5)

    # the whole epoch in one call
    se, sd = np.zeros((enc.n_units, 3)), np.zeros((dec.n_units, 3))
    loss = k_train_epoch(enc, dec, X, order, bs, lr, fresh, se, sd)
    assert loss == pytest.approx(ref["loss"], rel=1e-5)
    np.testing.assert_allclose(enc.params[0], ref["pe"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dec.params[0], ref["pd"], rtol=1e-4, atol=1e-5)
    # it trained: live parameters moved by about lr per step
    assert np.abs(enc.params[0] - pe0).max() > lr / 2
    assert np.abs(dec.params[0] - pd0).max() > lr / 2
    # pruned entries untouched and exactly 0, with 0 moments
    for a, mask in ((enc, me), (dec, md)):
        dead = mask == 0
        assert np.all(a.params[0][dead] == 0.0)
        assert np.all(a.m[0][dead] == 0.0) and np.all(a.v[0][dead] == 0.0)
    if fresh:
        assert enc.step[0] == 1 and dec.step[0] == 1
        assert not enc.m.any() and not dec.v.any()
    else:
        assert enc.step[0] == 4 and dec.step[0] == 4
        np.testing.assert_allclose(enc.m[0], ref["adam_e"].m, rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(dec.v[0], ref["adam_d"].v, rtol=1e-3, atol=1e-10)

    # fused VARIANCE stats over every training forward pass of the epoch
    for got, want in ((se, ref["stats_e"]), (sd, ref["stats_d"])):
        np.testing.assert_array_equal(got[:, 0], np.full(got.shape[0], N))
        np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-4, atol=1e-5)
    # step-by-step accumulation gives the same statistics
    np.testing.assert_allclose(se1, se, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sd1, sd, rtol=1e-6, atol=1e-9)


def test_train_epoch_latent_wider_than_input():
    """An overcomplete pair (latent 5 > input 3) trains like any other:
    dLoss/dcode (``B * latent`` floats) has its own buffer, so it does not
    overrun the ``B * input`` floats of dLoss/dy."""
    sizes = (3, 7, 5)
    enc, dec = make_pair(sizes, 35)
    rng = np.random.default_rng(36)
    N, bs, lr = 10, 3, 1e-2
    X = data(rng, N, sizes[0])
    order = rng.permutation(N)
    ref = oracle.train_epoch(enc.shapes, enc.params[0], enc.mask[0], dec.shapes,
                             dec.params[0], dec.mask[0], X, order, bs, lr, B1, B2, EPS)
    se, sd = np.zeros((enc.n_units, 3)), np.zeros((dec.n_units, 3))
    loss = k_train_epoch(enc, dec, X, order, bs, lr, False, se, sd)
    assert loss == pytest.approx(ref["loss"], rel=1e-5)
    np.testing.assert_allclose(enc.params[0], ref["pe"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dec.params[0], ref["pd"], rtol=1e-4, atol=1e-5)


def test_train_epoch_without_stats_leaves_stats():
    enc, dec = make_pair((7, 13, 3), 31)
    rng = np.random.default_rng(32)
    X = data(rng, 10, 7)
    se = rng.normal(size=(enc.n_units, 3))
    sd = rng.normal(size=(dec.n_units, 3))
    se0, sd0 = se.copy(), sd.copy()
    k_train_epoch(enc, dec, X, rng.permutation(10), 3, 1e-3, False, se, sd, False)
    np.testing.assert_array_equal(se, se0)
    np.testing.assert_array_equal(sd, sd0)


# --------------------------------------------------------------------- gradient check


def find_smooth_case(sizes, seed, B):
    """A pair and a batch with every ReLU pre-activation and every residual
    y - x clearly away from 0 (no kink within the finite-difference step)."""
    for k in range(200):
        enc, dec = make_pair(sizes, seed + 1000 * k)
        X = data(np.random.default_rng(seed + 1000 * k + 1), B, sizes[0])
        ze, he = oracle.half_forward(enc.shapes, enc.params[0], X)
        zd, hd = oracle.half_forward(dec.shapes, dec.params[0], he[-1])
        smooth = relu_margin(ze + zd[:-1]) > 1e-3 and np.min(np.abs(hd[-1] - X)) > 1e-3
        # ... and a live path through every layer (a dead ReLU layer gives a 0 gradient)
        alive = all((z > 0).any(axis=1).all() for z in ze + zd[:-1])
        if smooth and alive:
            return enc, dec, X
    raise AssertionError("no smooth case found")


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("sizes", SIZES + [(3, 7, 5)])
def test_gradient_finite_differences(sizes, B):
    enc, dec, X = find_smooth_case(sizes, 500 + B + sizes[0], B)
    pe = enc.params[0].astype(np.float64)
    pd = dec.params[0].astype(np.float64)
    loss, ge, gd, _ = oracle.loss_and_grad(enc.shapes, pe, dec.shapes, pd, X)

    def f(pe_, pd_):
        y = oracle.reconstruct(enc.shapes, pe_, dec.shapes, pd_, X)
        return np.abs(y - X).mean()

    assert f(pe, pd) == pytest.approx(loss, rel=1e-12)
    h = 1e-6
    num_e = np.empty_like(pe)
    for k in range(pe.size):
        a, b = pe.copy(), pe.copy()
        a[k] += h
        b[k] -= h
        num_e[k] = (f(a, pd) - f(b, pd)) / (2 * h)
    num_d = np.empty_like(pd)
    for k in range(pd.size):
        a, b = pd.copy(), pd.copy()
        a[k] += h
        b[k] -= h
        num_d[k] = (f(pe, a) - f(pe, b)) / (2 * h)
    np.testing.assert_allclose(ge, num_e, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gd, num_d, rtol=1e-5, atol=1e-8)
    assert np.abs(ge).max() > 1e-3 and np.abs(gd).max() > 1e-3

    # the kernel's gradient (forward, L1, backward as train_epoch does it)
    kloss, kge, kgd, kdx = k_loss_grad(enc, enc.params[0], dec, dec.params[0], X)
    assert kloss == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(kge, ge, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(kgd, gd, rtol=1e-4, atol=1e-6)
    # and dLoss/dX through the encoder (need_dx=True)
    Xd = np.asarray(X, np.float64)
    ze, he = oracle.half_forward(enc.shapes, pe, Xd)
    zd, hd = oracle.half_forward(dec.shapes, pd, he[-1])
    _, dy = oracle.l1_loss_grad(hd[-1], Xd)
    _, dcode = oracle.half_backward(dec.shapes, pd, he[-1], hd, dy)
    _, dx = oracle.half_backward(enc.shapes, pe, Xd, he, dcode)
    np.testing.assert_allclose(kdx, dx, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("chunk", [1, 3, 4, 100])
@pytest.mark.parametrize("sizes", SIZES)
def test_forward_half_and_evaluate_l1(sizes, chunk):
    enc, dec = make_pair(sizes, 600 + chunk)
    X = data(np.random.default_rng(601 + chunk), 10, sizes[0])
    _, he = oracle.half_forward(enc.shapes, enc.params[0], X)
    _, hd = oracle.half_forward(dec.shapes, dec.params[0], he[-1])
    code = cpu.forward_half(enc.params[0], enc.table, X, chunk)
    assert code.shape == (10, sizes[-1]) and code.dtype == F32
    np.testing.assert_allclose(code, he[-1], rtol=RTOL, atol=ATOL)
    Y = cpu.forward_half(dec.params[0], dec.table, code, chunk)
    assert Y.shape == X.shape
    np.testing.assert_allclose(Y, hd[-1], rtol=RTOL, atol=ATOL)
    assert np.all((Y > 0) & (Y < 1))  # sigmoid output
    l1 = cpu.evaluate_l1(enc.params[0], enc.table, dec.params[0], dec.table, X, chunk)
    assert l1 == pytest.approx(np.abs(hd[-1] - X).mean(), rel=1e-5)


@pytest.mark.parametrize("sizes", SIZES)
def test_all_pairs_l1(sizes):
    E, Dn, N = 3, 2, 5
    arch = Architecture(sizes)
    PE = Arena(arch.encoder_shapes(), E)
    PD = Arena(arch.decoder_shapes(), Dn)
    rng = np.random.default_rng(700 + sizes[0])
    PE.init(rng)
    PD.init(rng)
    Xb = data(rng, N, sizes[0])
    out = cpu.all_pairs_l1(PE.params, PE.table, PD.params, PD.table, Xb)
    assert out.shape == (E, Dn) and out.dtype == np.float64
    ref = np.array([[np.abs(oracle.reconstruct(PE.shapes, PE.params[e], PD.shapes,
                                               PD.params[d], Xb) - Xb).mean()
                     for d in range(Dn)] for e in range(E)])
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    assert len(np.unique(np.round(ref, 8))) == E * Dn  # distinct pairs really differ
    for e in range(E):
        for d in range(Dn):
            # the same pair's evaluate_l1, to the last bit (rows summed in one order)
            assert out[e, d] == cpu.evaluate_l1(PE.params[e], PE.table, PD.params[d],
                                                PD.table, Xb, N)


# --------------------------------------------------------------------- determinism


def test_determinism_bit_identical():
    sizes = (7, 13, 3)
    rng = np.random.default_rng(800)
    X = data(rng, 10, 7)
    order = rng.permutation(10)

    def run():
        enc, dec = masked_pair(sizes, 801)
        se, sd = np.zeros((enc.n_units, 3)), np.zeros((dec.n_units, 3))
        losses = [k_train_epoch(enc, dec, X, order, 3, 1e-2, False, se, sd) for _ in range(2)]
        code = cpu.forward_half(enc.params[0], enc.table, X, 4)
        l1 = cpu.evaluate_l1(enc.params[0], enc.table, dec.params[0], dec.table, X, 3)
        marks = cpu.conjunctive_marks(enc.params[0], enc.table, dec.params[0], dec.table, X, 0.7)
        _, ge, gd, _ = k_loss_grad(enc, enc.params[0], dec, dec.params[0], X[:5])
        PE = np.stack([enc.params[0]] * 3)
        PD = np.stack([dec.params[0]] * 2)
        ap = cpu.all_pairs_l1(PE, enc.table, PD, dec.table, X[:5])
        return [np.array(losses), enc.params[0], enc.m[0], enc.v[0], dec.params[0], dec.m[0],
                dec.v[0], se, sd, code, np.array([l1]), marks[0], marks[1], ge, gd, ap]

    a, b = run(), run()
    for u, w in zip(a, b):
        assert u.dtype == w.dtype
        np.testing.assert_array_equal(u.view(np.uint8), w.view(np.uint8))


def test_sigmoid_inplace_accuracy_and_special_values():
    z = np.concatenate([np.linspace(-90, 90, 20001), np.random.default_rng(7).normal(0, 5, 999)])
    z = z.astype(np.float32)
    ref = 1 / (1 + np.exp(-z.astype(np.float64)))
    out = z.copy()
    kl.sigmoid_inplace(out, np.empty(z.size, np.int32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=5e-7, atol=1e-37)
    assert np.all(np.diff(out[:20001]) >= 0)  # monotone on the sorted part
    special = np.array([np.nan, np.inf, -np.inf, 0.0, 88.7, -88.7], np.float32)
    kl.sigmoid_inplace(special, np.empty(6, np.int32))
    assert np.isnan(special[0])
    assert special[1] == 1.0 and 0.0 <= special[2] < 1e-37 and special[3] == 0.5
    assert special[4] == 1.0 and special[5] < 1e-37

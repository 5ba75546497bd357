"""No subnormal float32 numbers in the CPU kernels (``kernels/fpenv.py``).

Every compiled entry point runs with flush-to-zero and denormals-are-zero and
gives the calling thread its floating-point control register back; the
portable guards (Adam moments flushed below the smallest normal, a sigmoid
whose output stays normal) hold even with FTZ off.
"""

import numpy as np
import pytest
from numba import njit

from sparseae import CanonicalRun, TrainConfig
from sparseae.kernels import cpu, cpu_layers, fpenv
from sparseae.kernels.contract import AdamConfig, flush_tiny
from sparseae.model import Architecture, Arena

F32 = np.float32
TINY = np.finfo(F32).tiny
ADAM = AdamConfig(0.5, 0.999, 1e-8, False)
x86 = pytest.mark.skipif(not fpenv.X86, reason="MXCSR exists on x86 only")


def subnormal(a):
    a = np.asarray(a)
    return int(((a != 0) & (np.abs(a) < TINY)).sum())


def pair(sizes=(9, 13, 5), P=1, seed=0):
    arch = Architecture(sizes)
    e = Arena(arch.encoder_shapes(), P)
    d = Arena(arch.decoder_shapes(), P)
    rng = np.random.default_rng(seed)
    e.init(rng)
    d.init(rng)
    return e, d


def entry_point_calls():
    """One call of every compiled CPU entry point, on tiny shapes."""
    e, d = pair(P=3)
    rng = np.random.default_rng(1)
    X = rng.random((12, 9)).astype(F32)
    se = np.zeros((e.n_units, 3))
    sd = np.zeros((d.n_units, 3))
    order = np.arange(12, dtype=np.int64)
    return {
        "train_epoch": lambda: cpu.train_epoch(e.half(0), d.half(0), X, order, 5, 1e-3, ADAM,
                                               (se, sd), True),
        "train_epoch_many": lambda: cpu.train_epoch_many(
            e.half(slice(0, 3)), d.half(slice(0, 3)), X, np.stack([order] * 3), 5,
            np.full(3, 1e-3), ADAM, (np.zeros((3, e.n_units, 3)), np.zeros((3, d.n_units, 3))),
            True),
        "forward_half": lambda: cpu.forward_half(e.params[0], e.table, X, 4),
        "evaluate_l1": lambda: cpu.evaluate_l1(e.params[0], e.table, d.params[0], d.table, X, 4),
        "all_pairs_l1": lambda: cpu.all_pairs_l1(e.params, e.table, d.params, d.table, X[:5]),
        "conjunctive_marks": lambda: cpu.conjunctive_marks(e.params[0], e.table, d.params[0],
                                                           d.table, X, 0.1),
        "pairwise_sq_l2": lambda: cpu.pairwise_sq_l2(e.params),
    }


@x86
@pytest.mark.parametrize("name", sorted(entry_point_calls()))
def test_entry_points_restore_the_callers_mxcsr(name):
    call = entry_point_calls()[name]
    before = fpenv.get_mxcsr()
    try:
        # the default state (FTZ/DAZ off) and a caller that already set FTZ and
        # a non-default rounding mode (round toward zero, bits 13-14)
        for state in (0x1F80, 0x1F80 | 0x8000 | 0x6000):
            fpenv.set_mxcsr(state)
            call()
            assert fpenv.get_mxcsr() & 0xFFC0 == state & 0xFFC0  # control bits
    finally:
        fpenv.set_mxcsr(before)


@x86
def test_enter_sets_ftz_and_daz_and_leave_restores():
    @njit
    def probe(x, out):
        # as in every kernel, the work reads arrays and writes arrays between
        # enter and leave, so LLVM keeps it there
        old = fpenv.enter()
        inside = fpenv.read()
        out[0] = x[0] * x[1]  # 1e-30 * 1e-10: a subnormal result (FTZ -> 0)
        out[1] = x[2] * F32(1e30)  # a subnormal operand (DAZ -> 0)
        fpenv.leave(old)
        out[2] = x[0] * x[1]  # after leave: the caller's mode again
        return inside

    before = fpenv.get_mxcsr()
    x = np.array([1e-30, 1e-10, 1e-40], F32)
    out = np.full(3, np.nan, F32)
    inside = probe(x, out)
    assert inside & 0x8040 == 0x8040
    assert out[0] == 0 and out[1] == 0
    assert out[2] == x[0] * x[1] != 0
    assert fpenv.get_mxcsr() & 0xFFC0 == before & 0xFFC0  # status flags may differ


def test_flush_tiny():
    @njit
    def flush(x):
        out = np.empty_like(x)
        for k in range(x.shape[0]):
            out[k] = flush_tiny(x[k])
        return out

    x = np.array([0.0, TINY, -TINY, TINY / 2, -TINY / 3, 1e-45, 1.0, -2.5], F32)
    np.testing.assert_array_equal(flush(x), [0, TINY, -TINY, 0, 0, 0, 1.0, -2.5])


@njit
def _adam_no_ftz(p, g, mask, m, v, step, n):
    # helpers do not touch MXCSR: this is the kernels' portable path
    for _ in range(n):
        cpu_layers.adam_update(p, g, mask, m, v, step, 1e-3, ADAM)


@njit
def _sigmoid_no_ftz(z):
    cpu_layers.sigmoid_inplace(z, np.empty(z.shape[0], np.int32))


def _without_ftz(fn):
    before = fpenv.get_mxcsr()
    fpenv.set_mxcsr(before & ~0x8040 if fpenv.X86 else 0)
    try:
        return fn()
    finally:
        fpenv.set_mxcsr(before)


def test_portable_guards_keep_moments_and_outputs_normal_without_ftz():
    # moments of zero-gradient weights decay through the subnormal range:
    # m by 0.5 and v by 0.999 per step; the guard flushes them to exactly 0
    n = 64
    p = np.linspace(-1, 1, n).astype(F32)
    g = np.zeros(n, F32)
    mask = np.ones(n, np.uint8)
    m = np.geomspace(1e-30, 1e-36, n).astype(F32)
    v = np.geomspace(1.3e-38, 1.18e-38, n).astype(F32)
    step = np.zeros(1, np.int64)
    p0 = p.copy()
    for _ in range(120):
        _without_ftz(lambda: _adam_no_ftz(p, g, mask, m, v, step, 1))
        assert subnormal(m) == 0 and subnormal(v) == 0
    assert not m.any() and not v.any()
    # an update from such moments is far below a weight's last bit
    np.testing.assert_array_equal(p, p0)

    z = np.array([-1000.0, -89.0, -88.0, -87.5, -87.3, -80.0, 0.0, 80.0, 1000.0], F32)
    _without_ftz(lambda: _sigmoid_no_ftz(z))
    assert subnormal(z) == 0
    assert z.min() >= TINY and z[-1] == 1.0
    assert z[5] == pytest.approx(1 / (1 + np.exp(80.0)), rel=1e-5)


def test_canonical_training_leaves_no_subnormal():
    """A run that saturates outputs and kills ReLU units: every parameter,
    Adam moment and output stays normal or exactly 0.  (Before the fix this
    configuration left hundreds of subnormal moments and outputs.)"""
    cfg = TrainConfig(paradigm="canonical", arch="60,24,6", epochs=40, lr=3e-2, dim=60,
                      per_cluster=30, seed=4)
    run = CanonicalRun(cfg)
    run.run()
    ae = run.model
    for a in (ae.encoder, ae.decoder):
        for arr in (a.params, a.m, a.v):
            assert subnormal(arr) == 0
    outs = ae.reconstruct(run.data.train)
    assert subnormal(outs) == 0
    # the run did reach the regime that makes subnormals: saturated outputs
    assert (outs < 1e-30).mean() > 0.01 or (ae.decoder.v == 0).mean() > 0.01

"""Inputs and correctness checks of ``bench.gpu``: the CUDA kernels against the
CPU kernels on the default architecture (``bench/gpu.py`` imports the kernels
first, mapping ``kernels/`` by hand when the checkout is not installed)."""

import json
import time
import traceback

import numpy as np

from sparseae._options import ADAM_BETAS, ADAM_EPS
from sparseae.kernels import cpu
from sparseae.kernels import cuda as ck
from sparseae.kernels.contract import AdamConfig
from sparseae.model import Architecture, Arena

B1, B2 = ADAM_BETAS
EPS = ADAM_EPS
BATCH = 5
N_SAMPLES = 1000
DIM = 1000
#: the architecture of every check and timing (``bench.gpu --arch`` sets it)
ARCH = ["default"]


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------ inputs


def binary_data(rng, n=None, d=None):
    """Binary data with cluster structure (as the paper's generator)."""
    n = N_SAMPLES if n is None else n
    d = DIM if d is None else d
    centres = rng.random((10, d)) < 0.5
    lab = rng.integers(0, 10, n)
    flip = rng.random((n, d)) < 0.1
    return (centres[lab] ^ flip).astype(np.float32)


def population(P, rng, prune=0.3, distinct=16, adam=False):
    """``P`` default-architecture pairs (``distinct`` different ones, tiled),
    ``prune`` of every row pruned (parameters and moments 0)."""
    arch = Architecture.parse(ARCH[0])
    k = min(P, distinct)
    E = Arena(arch.encoder_shapes(), k)
    D = Arena(arch.decoder_shapes(), k)
    E.init(rng)
    D.init(rng)
    for a in (E, D):
        dead = rng.random(a.params.shape) < prune
        a.mask[dead] = 0
        a.params[dead] = 0.0
        if adam:
            a.m[...] = (rng.normal(size=a.m.shape) * 1e-3).astype(np.float32) * a.mask
            a.v[...] = (rng.random(a.v.shape) * 1e-6).astype(np.float32) * a.mask
            a.step[...] = rng.integers(1, 50, k)
    if P == k:
        return E, D
    rows = np.arange(P) % k
    return E.take(rows), D.take(rows)


def rel(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    scale = np.max(np.abs(want)) if want.size else 0.0
    if scale == 0.0:
        scale = 1.0
    return float(np.max(np.abs(got - want)) / scale) if want.size else 0.0


def norm_rel(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    n = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / (n if n else 1.0))


# ------------------------------------------------------------------ checks


def check_training(rng, X, fresh, P=4, steps=20, batch=None, with_stats=True, extra=0):
    batch = BATCH if batch is None else batch
    E, D = population(P, rng, adam=not fresh, distinct=P)
    cE, cD = E.copy(), D.copy()
    n = steps * batch + extra  # extra > 0: a short last batch
    orders = np.stack([rng.permutation(X.shape[0])[:n] for _ in range(P)])
    lrs = np.linspace(1e-3, 3e-3, P)
    se, sd = np.zeros((P, E.n_units, 3)), np.zeros((P, D.n_units, 3))
    cse, csd = se.copy(), sd.copy()
    adam = AdamConfig(B1, B2, EPS, fresh)
    loss = ck.train_epoch_many(E.half(slice(0, P)), D.half(slice(0, P)), X, orders, batch, lrs,
                               adam, (se, sd), with_stats)
    ref = np.array([cpu.train_epoch(cE.half(p), cD.half(p), X, orders[p], batch, lrs[p], adam,
                                    (cse[p], csd[p]), with_stats)
                    for p in range(P)])
    res = {
        "loss": rel(loss, ref),
        "enc_params": rel(E.params, cE.params), "dec_params": rel(D.params, cD.params),
        "enc_params_norm": norm_rel(E.params, cE.params),
        "dec_params_norm": norm_rel(D.params, cD.params),
        "enc_m": rel(E.m, cE.m), "dec_m": rel(D.m, cD.m),
        "enc_v": rel(E.v, cE.v), "dec_v": rel(D.v, cD.v),
        "steps_equal": bool(np.array_equal(E.step, cE.step) and np.array_equal(D.step, cD.step)),
        "pruned_exactly_zero": bool(all(
            np.all(a.params[a.mask == 0] == 0) and np.all(a.m[a.mask == 0] == 0)
            and np.all(a.v[a.mask == 0] == 0) for a in (E, D))),
        "finite": bool(np.isfinite(E.params).all() and np.isfinite(D.params).all()),
    }
    if with_stats:
        res["stats_e"] = rel(se, cse)
        res["stats_d"] = rel(sd, csd)
    return res


def check_eval(rng, X, P=4):
    E, D = population(P, rng, distinct=P)
    Xe = X[:200]
    got = ck.evaluate_l1_many(E.params, E.table, D.params, D.table, Xe)
    want = [cpu.evaluate_l1(E.params[p], E.table, D.params[p], D.table, Xe, 256)
            for p in range(P)]
    Xb = X[:BATCH]
    ap = ck.all_pairs_l1(E.params[:3], E.table, D.params, D.table, Xb)
    apc = cpu.all_pairs_l1(E.params[:3], E.table, D.params, D.table, Xb)
    res = {"evaluate_l1_many": rel(got, want), "all_pairs_l1": rel(ap, apc)}
    # a lockstep group's batched evaluations: neighbourhoods on per-run batches
    enc = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 0], [3, 0, 1]])
    rows = np.stack([rng.choice(X.shape[0], BATCH, replace=False) for _ in range(4)])
    pm = ck.pairs_l1_many(E.params, E.table, D.params, D.table, X, enc, enc, rows, BATCH)
    pmc = cpu.pairs_l1_many(E.params, E.table, D.params, D.table, X, enc, enc, rows, BATCH)
    res["pairs_l1_many"] = rel(pm, pmc)
    d2, ov = ck.population_stats_many(E.params, E.mask, 2)
    cd2, cov = cpu.population_stats_many(E.params, E.mask, 2)
    res["population_d2"] = rel(d2, cd2)
    res["population_overlap_mismatches"] = int(np.sum(ov != cov))
    Xc = X[:50]
    for C in (0.1, 0.5):
        me, md = ck.conjunctive_marks_many(E.params, E.table, D.params, D.table, Xc, C)
        diff = 0
        marked = 0
        for p in range(P):
            ce, cd = cpu.conjunctive_marks(E.params[p], E.table, D.params[p], D.table, Xc, C)
            diff += int(np.sum(me[p] != ce) + np.sum(md[p] != cd))
            marked += int(ce.sum() + cd.sum())
        res[f"conjunctive_C{C}_mismatches"] = diff
        res[f"conjunctive_C{C}_marked"] = marked
    return res


def run_checks(rng, X):
    out = {}
    for name, kw in [("persistent", dict(fresh=False)), ("fresh", dict(fresh=True)),
                     ("batch10_no_stats", dict(fresh=False, batch=10, steps=8,
                                               with_stats=False)),
                     ("last_batch_short", dict(fresh=False, steps=4, extra=3))]:
        t0 = time.perf_counter()
        try:
            out[name] = check_training(rng, X, **kw)
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}",
                         "trace": traceback.format_exc()[-2000:]}
        out[name]["seconds"] = round(time.perf_counter() - t0, 2)
        log(f"check {name}: {json.dumps(out[name])}")
    try:
        out["eval"] = check_eval(rng, X)
    except Exception as exc:
        out["eval"] = {"error": f"{type(exc).__name__}: {exc}",
                       "trace": traceback.format_exc()[-2000:]}
    log(f"check eval: {json.dumps(out['eval'])}")
    return out

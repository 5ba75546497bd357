"""Per-layer rows of ``bench.kernels``: each dense layer forward and backward, and
the masked Adam update, timed from small compiled loops beside the same
operation in plain NumPy (``bench._numpy_ref``).  See ``bench/kernels.py``."""

import statistics

import numpy as np
from numba import njit

from bench._numpy_ref import BETA1, BETA2, EPS, LR, NumpyAE, np_adam, np_backward, np_forward
from bench._timing import pyloop
from sparseae import _options as opt
from sparseae.kernels import cpu, fpenv
from sparseae.kernels import cpu_layers as kl

LAYER_BATCHES = (5, 100)
BATCH = 5


# Small compiled loops around the kernels (not cached on purpose: numba's cache
# does not notice when a callee in kernels/cpu.py changes).


@njit
def _loop_forward(n, p, lay, l, x, h, B, fused, scratch):
    old = fpenv.enter()  # as in training (kernels.fpenv)
    for _ in range(n):
        kl.dense_forward(p, lay, l, x, h, B, fused, scratch)
    fpenv.leave(old)


@njit
def _loop_backward(n, p, lay, l, x, h, dh0, dh, B, g, dx, need_dx):
    old = fpenv.enter()
    for _ in range(n):
        dh[:] = dh0
        kl.dense_backward(p, lay, l, x, h, dh, B, g, dx, need_dx)
    fpenv.leave(old)


@njit
def _loop_copy(n, src, dst):
    for _ in range(n):
        dst[:] = src


@njit
def _loop_adam(n, p, g, mask, m, v, step, lr, adam):
    old = fpenv.enter()
    for _ in range(n):
        kl.adam_update(p, g, mask, m, v, step, lr, adam)
    fpenv.leave(old)


# ----------------------------------------------------------------- helpers


def _layers(ae):
    """``(name, arena, l, n_in, n_out, act, transposed, w_off, b_off)`` per layer."""
    out = []
    for half, arena in (("enc", ae.encoder), ("dec", ae.decoder)):
        for l in range(arena.n_layers):
            r = arena.table[l]
            out.append((f"{half}{l}", arena, l, int(r[opt.COL_IN]), int(r[opt.COL_OUT]),
                        int(r[opt.COL_ACT]), int(r[opt.COL_T]), int(r[opt.COL_W]),
                        int(r[opt.COL_B])))
    return out


def _storage(gW, transposed):
    """``(out, in)`` array flattened in the kernel's storage orientation."""
    return np.ascontiguousarray(gW.T if transposed else gW).ravel()


def _relerr(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    scale = max(float(np.abs(b).max()), 1e-30)
    return float(np.abs(a - b).max()) / scale


def _train_args(ae, X, order, batch, with_stats, fresh=False):
    """``cpu.train_epoch``'s arguments for ``ae`` (fresh statistics arrays)."""
    e, d = ae.encoder, ae.decoder
    stats = (np.zeros((e.n_units, 3)), np.zeros((d.n_units, 3)))
    return (e.half(0), d.half(0), X, order, batch, LR, cpu.AdamConfig(BETA1, BETA2, EPS, fresh),
            stats, with_stats)


def _ae_state(ae):
    return [(a.params.copy(), a.m.copy(), a.v.copy(), a.step.copy())
            for a in (ae.encoder, ae.decoder)]


def _ae_restore(ae, state):
    for a, (p, m, v, s) in zip((ae.encoder, ae.decoder), state):
        a.params[...] = p
        a.m[...] = m
        a.v[...] = v
        a.step[...] = s


# ----------------------------------------------------------------- benchmark


def _fwd_items(suite, key, arena, l, n_in, n_out, act, B, c, L, check):
    p = arena.params[0].copy()
    x = c["x"].ravel().copy()
    h = np.empty(B * n_out, np.float32)
    fused = kl.no_fusion(arena.table)
    scratch = np.empty(n_out, np.int32)
    suite.add(key, lambda k: _loop_forward(k, p, arena.table, l, x, h, B, fused, scratch))
    check[f"forward {key[1]} B={B}"] = _relerr(h, c["h"])
    xh = c["x"].copy()
    hh = np.empty((B, n_out), np.float32)
    suite.add(key + ("numpy",), pyloop(lambda: np_forward(L["W"], L["b"], act, xh, hh)))


def _bwd_items(suite, key, arena, l, n_in, n_out, act, tr, w0, b0, B, c, L, need_dx, check):
    p = arena.params[0].copy()
    x = c["x"].ravel().copy()
    hk = c["h"].ravel().copy()
    dh0 = c["dh"].ravel().copy()
    dh = dh0.copy()
    g = np.empty(arena.n, np.float32)
    gw = g[w0:w0 + n_in * n_out]
    gb = g[b0:b0 + n_out]
    dx = np.empty(B * n_in, np.float32)
    suite.add(key, lambda k: _loop_backward(k, p, arena.table, l, x, hk, dh0, dh, B, g, dx,
                                            need_dx))
    suite.add(key + ("copy",), lambda k: _loop_copy(k, dh0, dh))
    name = key[1]
    check[f"backward gW {name} B={B}"] = _relerr(gw, _storage(c["gW"], tr))
    check[f"backward gb {name} B={B}"] = _relerr(gb, c["gb"])
    if need_dx:
        check[f"backward dx {name} B={B}"] = _relerr(dx, c["dx"])
    # NumPy: the same restore-then-backward, the restore cost subtracted likewise
    xh, hn, dhn0 = c["x"], c["h"], c["dh"]
    dhn = dhn0.copy()
    gWn = np.empty((n_out, n_in), np.float32)
    gbn = np.empty(n_out, np.float32)
    dxn = np.empty((B, n_in), np.float32)

    def np_bw():
        np.copyto(dhn, dhn0)
        np_backward(L["W"], act, xh, hn, dhn, gWn, gbn, dxn, need_dx)

    suite.add(key + ("numpy",), pyloop(np_bw))
    suite.add(key + ("numpy", "copy"), pyloop(lambda: np.copyto(dhn, dhn0)))


def _adam_items(suite, key, arena, g, nh):
    p = arena.params[0].copy()
    mask = arena.mask[0].copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    step = np.zeros(1, np.int64)
    adam = cpu.AdamConfig(BETA1, BETA2, EPS, False)
    suite.add(key, lambda k: _loop_adam(k, p, g, mask, m, v, step, LR, adam))
    # a fresh Adam (gecco25 Lipi-AE-S): no moments, one divide per entry
    pf = p.copy()
    fresh = cpu.AdamConfig(BETA1, BETA2, EPS, True)
    suite.add(key + ("fresh",), lambda k: _loop_adam(k, pf, g, mask, m, v, step, LR, fresh))
    nhc = dict(nh, p=nh["p"].copy(), m=np.zeros_like(nh["m"]), v=np.zeros_like(nh["v"]),
               step=0)
    suite.add(key + ("numpy",), pyloop(lambda: np_adam(nhc)))


def add_layers(suite, ae, X, check):
    """Register the per-layer and Adam measurements; return the row specs."""
    specs = []
    nae = NumpyAE(ae)
    layers = _layers(ae)
    for B in LAYER_BATCHES:
        cap = []
        nae.forward_backward(X[:B].copy(), capture=cap)
        for (name, arena, l, n_in, n_out, act, tr, w0, b0), c, L in zip(layers, cap, nae.layers):
            shape = f"{name} {n_in}->{n_out}"
            act_name = "relu" if act == opt.RELU else "sigmoid"
            key = ("dense_forward", name, B)
            _fwd_items(suite, key, arena, l, n_in, n_out, act, B, c, L, check)
            specs.append(dict(key=key, kernel="dense_forward", layer=shape, act=act_name,
                              transposed=tr, batch=B, need_dx=None,
                              flops=2.0 * B * n_in * n_out))
            need_dx = name != "enc0"
            key = ("dense_backward", name, B)
            _bwd_items(suite, key, arena, l, n_in, n_out, act, tr, w0, b0, B, c, L, need_dx,
                       check)
            specs.append(dict(key=key, kernel="dense_backward", layer=shape, act=act_name,
                              transposed=tr, batch=B, need_dx=need_dx,
                              flops=(4.0 if need_dx else 2.0) * B * n_in * n_out))

    # Adam over whole rows, with the real gradient of a batch-5 step
    nae.forward_backward(X[:BATCH].copy())
    for half, arena, nh in (("encoder", ae.encoder, nae.halves[0]),
                            ("decoder", ae.decoder, nae.halves[1])):
        g = np.zeros(arena.n, np.float32)
        for (_, ar, _, n_in, n_out, _, tr, w0, b0), L in zip(layers, nae.layers):
            if ar is arena:
                g[w0:w0 + n_in * n_out] = _storage(L["gW"], tr)
                g[b0:b0 + n_out] = L["gb"]
        key = ("adam_update", half)
        _adam_items(suite, key, arena, g, nh)
        specs.append(dict(key=key, kernel="adam_update", layer=f"{half} row ({arena.n})",
                          act=None, transposed=None, batch=None, need_dx=None, flops=None,
                          nbytes=arena.n * (4 * 4 + 1 + 3 * 4)))  # r: p g m v mask, w: p m v
    return specs


def layer_rows(suite, specs):
    rows = []
    for sp in specs:
        key = sp["key"]
        samples = list(suite.samples(key))
        nsamples = list(suite.samples(key + ("numpy",)))
        extra = {}
        if sp["kernel"] == "dense_backward":
            cmed = suite.median(key + ("copy",))
            ncmed = suite.median(key + ("numpy", "copy"))
            samples = [s - cmed for s in samples]
            nsamples = [s - ncmed for s in nsamples]
            extra = dict(copy_us_subtracted=cmed * 1e6, numpy_copy_us_subtracted=ncmed * 1e6)
        med = max(statistics.median(samples), 1e-12)
        nmed = max(statistics.median(nsamples), 1e-12)
        row = {k: v for k, v in sp.items() if k not in ("key", "flops", "nbytes")}
        row.update(us=med * 1e6,
                   gflops=sp["flops"] / med / 1e9 if sp["flops"] else None,
                   numpy_us=nmed * 1e6, numpy_over_sparseae=nmed / med,
                   min_us=min(samples) * 1e6, inner_n=suite.n(key), **extra,
                   samples_us=[s * 1e6 for s in samples])
        if sp.get("nbytes"):
            row["gbytes_s"] = sp["nbytes"] / med / 1e9
        rows.append(row)
    return rows

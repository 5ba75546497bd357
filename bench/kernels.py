"""Microbenchmark of sparseae's Numba CPU kernels, with a plain NumPy baseline.

Run from the repository root (``/work/main``)::

    python -m bench.kernels                     # print the table
    python -m bench.kernels --json bench.json   # also write every number as JSON
    python -m bench.kernels --repeat 15         # more timed repeats (default 11)
    python -m bench.kernels --skip-compile      # skip the cold-compile subprocesses
    python -m bench.kernels --long              # epoch 1 vs epoch 400 of whole runs (bench.long)

With the defaults the whole run takes about 30 s on a 2-core machine, plus about
10 s for the cold compile (``--compile-repeat K`` runs the cold compile K times
and reports the median).

The report starts with the machine: CPU model, LLVM's target name, SIMD
extensions, the load average before and after, and a roofline measured in the
same run (one-thread sgemm GFLOP/s, L1 and L2 read bandwidth; see
``bench._timing.roofline``).  Every timed row is the median over ``--repeat``
samples of wall time (``time.perf_counter``) and of the thread's CPU time
(``time.thread_time``); a sample times ``n`` calls, ``n`` chosen so that it
lasts about 20 ms, and the samples of all rows are taken round-robin, so a
burst of load from another process spoils a few samples of many rows instead
of every sample of one row.  ``--json`` also stores every sample.

``compile_s``
    A fresh ``python`` subprocess whose ``NUMBA_CACHE_DIR`` is a new, empty
    temporary directory (cold cache) times, from its first line: importing
    numpy, ``sparseae.model`` and ``sparseae.kernels.cpu``, then the first call
    of ``train_epoch``, ``evaluate_l1`` and ``forward_half`` -- every kernel that
    ``sparseae train`` needs.  ``warm_start_s`` is the same script run again
    (3 times, median) against the now-filled cache directory.
Per-layer rows (``Autoencoder("default", seed=0)``: encoder 1000-30-10, decoder 10-30-1000)
    ``dense_forward`` and ``dense_backward`` (``need_dx`` except for the first
    encoder layer) at batch 5 and 100, and ``adam_update`` over the whole
    encoder row and the whole decoder row.  Each kernel is called ``n`` times
    from a small ``@njit`` loop (with FTZ/DAZ set, as in training), so Python
    dispatch is not in the time.  The inputs are the real activations and loss
    gradients of the model on the default data, so ReLU zero-skipping happens
    as in training.  ``dense_backward`` overwrites ``dh`` in place, so the loop
    restores it before each call; the cost of that copy is measured alone and
    subtracted.  GFLOP/s counts ``2*B*n_in*n_out`` flops for a forward and
    twice that for a backward with ``dx`` (once without).  The NumPy column
    times the same operation written in plain NumPy (``bench._numpy_ref``),
    called from Python; ``numpy/sae`` is NumPy time divided by sparseae time
    (>1: the kernel is faster).
``epoch_ms``, ``epoch_stats_ms``, ``epoch_fresh_ms``, ``epoch_trained_ms``
    One ``train_epoch`` over the default data's 1000 training samples
    (binary clustering, dimension 1000), batch 5 (200 steps); parameters and
    Adam state are restored before every repeat.  ``epoch``: a freshly
    initialised model, persistent Adam; ``epoch_stats``: the same with the
    fused VARIANCE statistics; ``epoch_fresh``: a fresh Adam every step
    (gecco25 Lipi-AE-S); ``epoch_trained``: the model after ``--trained-epochs``
    (default 100) epochs of canonical training (saturated outputs, dead units,
    decayed Adam moments: where float32 subnormals appeared before
    ``kernels.fpenv``).  Each has a ``*_cpu_ms`` twin (thread CPU time).  An
    ALARM line is printed when ``epoch_trained_ms > 1.3 x epoch_ms`` or
    ``epoch_fresh_ms < 0.8 x epoch_ms``: a state-dependent slowdown.
``train_step_us``
    ``epoch_ms / 200``: the per-step cost inside compiled code.
    ``train_step_call_us`` is one ``train_epoch`` call from Python with an order
    of exactly 5 indices (one step), which adds the dispatch of 23 arguments
    and the kernel's per-call buffer allocations.  ``step_floor_us`` is the
    step's matrix arithmetic (forward, weight gradient, and input gradient of
    every layer but the first: ``step_flops``) at the one-thread sgemm rate
    (``sgemm_gflops``: 256 x 256 x 256 float32, sampled round-robin with the
    other rows, so a slower machine slows both); ``step_over_floor`` the ratio.
``numpy_step_us``
    The same training step (gather the batch, 4 layers forward, L1 loss,
    backward, masked Adam with betas 0.5/0.999 on float32 arrays, lr 1e-3)
    written in plain NumPy, timed as a 200-step epoch / 200 in the same
    process.  ``numpy_over_sparseae_step`` is ``numpy_step_us / train_step_us``.

A correctness cross-check (kernel vs. NumPy: per-layer outputs and gradients,
and the parameters after one full training step from the same state) is
printed and stored under ``check``.

Threads: the kernels are serial, so the NumPy baseline is made single-threaded
too: this module sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS``, ``BLIS_NUM_THREADS``, ``NUMEXPR_NUM_THREADS`` and
``VECLIB_MAXIMUM_THREADS`` to 1 *before* it imports numpy.  That only works
when numpy has not been imported yet in the process, which is why the
benchmark is meant to be run as ``python -m bench.kernels``.  The compile
subprocesses inherit the same environment.
"""

import os

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
for _var in _THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from bench._numpy_ref import BETA1, BETA2, EPS, LR, NumpyAE, np_adam, np_backward, np_forward  # noqa: E402,E501
from bench._timing import Suite, loadavg, machine, pyloop, roofline  # noqa: E402
from sparseae import _options as opt  # noqa: E402
from sparseae.kernels import cpu, fpenv  # noqa: E402
from sparseae.kernels import cpu_layers as kl  # noqa: E402
from sparseae.model import Autoencoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

BATCH = 5
LAYER_BATCHES = (5, 100)
TARGET_S = 0.02  # wall time of one timed sample (n calls)
TRAINED_LIMIT = 1.3  # alarm when a trained model's epoch is slower than this x a fresh one
FRESH_ADAM_LIMIT = 0.8  # ... or a fresh-Adam epoch faster than this x the plain one

# --------------------------------------------------------------- compile timing

_STARTUP_CHILD = r"""
import time
t0 = time.perf_counter()
import json
import numpy as np
from sparseae.model import Autoencoder
from sparseae.kernels import cpu
t1 = time.perf_counter()
ae = Autoencoder("default", seed=0)
e, d = ae.encoder, ae.decoder
X = (np.random.default_rng(0).random((20, e.shapes[0][0])) < 0.5).astype(np.float32)
order = np.arange(20, dtype=np.int64)
se = np.zeros((e.n_units, 3))
sd = np.zeros((d.n_units, 3))
t2 = time.perf_counter()
cpu.train_epoch(e.half(0), d.half(0), X, order, 5, 1e-3,
                cpu.AdamConfig(0.5, 0.999, 1e-8, False), (se, sd), False)
t3 = time.perf_counter()
cpu.evaluate_l1(e.params[0], e.table, d.params[0], d.table, X, 256)
t4 = time.perf_counter()
cpu.forward_half(e.params[0], e.table, X, 256)
t5 = time.perf_counter()
print(json.dumps({"total_s": (t5 - t0) - (t2 - t1), "import_s": t1 - t0,
                  "train_epoch_s": t3 - t2, "evaluate_l1_s": t4 - t3,
                  "forward_half_s": t5 - t4}))
"""


def _startup_run(cache_dir):
    """Run the startup script in a fresh interpreter with ``NUMBA_CACHE_DIR=cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _STARTUP_CHILD], cwd=REPO, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"startup subprocess failed:\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def measure_startup(compile_repeat, warm_repeat=3):
    cold, warm = [], []
    for k in range(compile_repeat):
        cache = Path(tempfile.mkdtemp(prefix="sparseae-bench-numba-"))
        try:
            cold.append(_startup_run(cache))
            if k == compile_repeat - 1:
                for _ in range(warm_repeat):
                    warm.append(_startup_run(cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return {
        "compile_s": statistics.median(r["total_s"] for r in cold),
        "warm_start_s": statistics.median(r["total_s"] for r in warm),
        "compile_runs": cold,
        "warm_runs": warm,
    }


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


def check_step(X, order):
    """One full training step, kernel vs. NumPy, from the same state."""
    ae = Autoencoder("default", seed=0)
    nae = NumpyAE(ae)
    o5 = order[:BATCH].copy()
    loss_k = float(cpu.train_epoch(*_train_args(ae, X, o5, BATCH, False)))
    loss_n = nae.step(X[o5])
    diff = 0.0
    for arena, nh in ((ae.encoder, nae.halves[0]), (ae.decoder, nae.halves[1])):
        for l, L in enumerate(nh["layers"]):
            diff = max(diff, float(np.abs(arena.weight(0, l) - L["W"]).max()),
                       float(np.abs(arena.bias(0, l) - L["b"]).max()))
    return {"step loss rel": abs(loss_k - loss_n) / abs(loss_n),
            "step params max|diff|/lr": diff / LR}


def default_data_and_trained(epochs):
    """The default data, and a model after the first ``epochs`` epochs of the
    default canonical run (400 epochs, seed 0)."""
    from sparseae import CanonicalRun, TrainConfig

    run = CanonicalRun(TrainConfig(paradigm="canonical", epochs=max(epochs, 400), seed=0))
    for _ in range(epochs):
        run.run_epoch()
    return run.data, run.model


def _subnormals(ae):
    tiny = np.finfo(np.float32).tiny
    return int(sum(((a != 0) & (np.abs(a) < tiny)).sum()
                   for h in (ae.encoder, ae.decoder) for a in (h.params, h.m, h.v)))


EPOCHS = ("epoch", "epoch_stats", "epoch_fresh", "epoch_trained")


def add_training(suite, X, order, trained):
    """Register the whole-step and epoch measurements."""
    # one step = one train_epoch call with 5 indices, from Python
    ae1 = Autoencoder("default", seed=0)
    s1 = _ae_state(ae1)
    args5 = _train_args(ae1, X, order[:BATCH].copy(), BATCH, False)
    suite.add("train_step_call", pyloop(lambda: cpu.train_epoch(*args5)),
              setup=lambda: _ae_restore(ae1, s1))

    # whole epochs (200 steps); parameters, Adam state and stats restored each time
    for key in EPOCHS:
        ae = trained if key == "epoch_trained" else Autoencoder("default", seed=0)
        s0 = _ae_state(ae)
        args = _train_args(ae, X, order, BATCH, key == "epoch_stats", key == "epoch_fresh")

        def setup(ae=ae, s0=s0, args=args):
            _ae_restore(ae, s0)
            for st in args[7]:
                st[...] = 0

        suite.add(key, lambda k, args=args: cpu.train_epoch(*args), setup=setup, fixed_n=1)

    # the roofline's FMA rate, sampled in the same rounds as the step it bounds
    a = np.random.default_rng(1).random((256, 256), dtype=np.float32)
    c = np.empty_like(a)
    suite.add("sgemm", pyloop(lambda: np.matmul(a, a, out=c)))

    # NumPy: the same epoch
    nae = NumpyAE(Autoencoder("default", seed=0))
    n0 = nae.state()
    suite.add("numpy_epoch", lambda k: nae.epoch(X, order, BATCH),
              setup=lambda: nae.restore(n0), fixed_n=1)


def step_flops(ae, batch=BATCH):
    """Matrix flops of one training step: forward and weight gradient of every
    layer, input gradient of every layer but the first."""
    sizes = [n_in * n_out for h in (ae.encoder, ae.decoder) for n_in, n_out, _ in h.shapes]
    return 2.0 * batch * (2 * sum(sizes) + sum(sizes[1:]))


def training_results(suite, order, roof):
    out = {}
    steps = math.ceil(len(order) / BATCH)
    out["train_step_call_us"] = suite.median("train_step_call") * 1e6
    out["train_step_call_samples_us"] = [s * 1e6 for s in suite.samples("train_step_call")]
    for key in EPOCHS + ("numpy_epoch",):
        out[f"{key}_ms"] = suite.median(key) * 1e3
        out[f"{key}_cpu_ms"] = suite.cpu_median(key) * 1e3
        out[f"{key}_samples_ms"] = [s * 1e3 for s in suite.samples(key)]
    out["steps_per_epoch"] = steps
    out["train_step_us"] = out["epoch_ms"] * 1e3 / steps
    out["train_step_cpu_us"] = out["epoch_cpu_ms"] * 1e3 / steps
    out["numpy_step_us"] = out["numpy_epoch_ms"] * 1e3 / steps
    out["numpy_over_sparseae_step"] = out["numpy_step_us"] / out["train_step_us"]
    out["trained_over_fresh_model"] = out["epoch_trained_ms"] / out["epoch_ms"]
    out["fresh_adam_over_persistent"] = out["epoch_fresh_ms"] / out["epoch_ms"]
    out["step_flops"] = step_flops(Autoencoder("default", seed=0))
    out["sgemm_gflops"] = 2 * 256 ** 3 / suite.median("sgemm") / 1e9
    out["step_floor_us"] = out["step_flops"] / (out["sgemm_gflops"] * 1e3)
    out["step_over_floor"] = out["train_step_us"] / out["step_floor_us"]
    alarms = []
    if out["trained_over_fresh_model"] > TRAINED_LIMIT:
        alarms.append(f"a trained model's epoch takes {out['trained_over_fresh_model']:.2f}x a "
                      f"fresh model's (limit {TRAINED_LIMIT}): subnormals or another "
                      "state-dependent slowdown")
    if out["fresh_adam_over_persistent"] < FRESH_ADAM_LIMIT:
        alarms.append(f"a fresh-Adam epoch takes {out['fresh_adam_over_persistent']:.2f}x a "
                      f"persistent one (expected >= {FRESH_ADAM_LIMIT}): the persistent "
                      "moments are slow (subnormals?)")
    out["alarms"] = alarms
    return out


# ------------------------------------------------------------------- report


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_report(res):
    m, roof = res["machine"], res["roofline"]
    print(f"sparseae kernel benchmark: {m['cpu']} (LLVM target {m['llvm_cpu']}, "
          f"{'/'.join(m['simd'])}), numpy {m['numpy']}, numba {m['numba']}")
    print(f"load average before {res['load_before']}, after {res['load_after']}; "
          f"repeat={res['repeat']}, medians of wall time (CPU time in brackets)")
    print(f"roofline measured now: sgemm {roof['sgemm_gflops']:.1f} GFLOP/s (1 thread), "
          f"L1 read {roof['l1_gbs']:.0f} GB/s, L2 read {roof['l2_gbs']:.0f} GB/s")
    if res.get("compile_s") is not None:
        c = res["compile_runs"][-1]
        print(f"compile (cold cache): {res['compile_s']:.2f} s   "
              f"[import {c['import_s']:.2f}, train_epoch {c['train_epoch_s']:.2f}, "
              f"evaluate_l1 {c['evaluate_l1_s']:.2f}, forward_half {c['forward_half_s']:.3f}]")
        print(f"warm start (cached):  {res['warm_start_s']:.2f} s")
    print()
    hdr = (f"{'kernel':<16} {'layer':<22} {'B':>4} {'dx':>3} {'sparseae us':>12} "
           f"{'GFLOP/s':>8} {'numpy us':>10} {'numpy/sae':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in res["layers"]:
        dx = "" if r["need_dx"] is None else ("y" if r["need_dx"] else "n")
        g = r["gflops"]
        gtxt = _fmt(g, "8.2f") if g is not None else f"{r['gbytes_s']:5.1f}GB/s"
        print(f"{r['kernel']:<16} {r['layer']:<22} {_fmt(r['batch'], '4d'):>4} {dx:>3} "
              f"{r['us']:12.2f} {gtxt:>8} {r['numpy_us']:10.2f} "
              f"{r['numpy_over_sparseae']:9.2f}")
    print("-" * len(hdr))
    t = res
    print(f"{'train step':<16} {'B=5, epoch/200':<22} {5:>4} {'':>3} {t['train_step_us']:12.2f} "
          f"{'':>8} {t['numpy_step_us']:10.2f} {t['numpy_over_sparseae_step']:9.2f}")
    print(f"{'train_epoch call':<16} {'1 step, from Python':<22} {5:>4} {'':>3} "
          f"{t['train_step_call_us']:12.2f}")
    labels = {"epoch": "fresh model", "epoch_stats": "+ VARIANCE stats",
              "epoch_fresh": "fresh Adam each step",
              "epoch_trained": f"trained {res['config']['trained_epochs']} epochs"}
    for key in EPOCHS:
        print(f"{'epoch (ms)':<16} {labels[key]:<22} {5:>4} {'':>3} {t[key + '_ms']:12.3f} "
              f"[{t[key + '_cpu_ms']:.3f}]", end="")
        if key == "epoch":
            print(f"{t['numpy_epoch_ms']:>11.3f} {t['numpy_epoch_ms'] / t['epoch_ms']:9.2f}")
        else:
            print(f"   x{t[key + '_ms'] / t['epoch_ms']:.2f} of a fresh model's")
    print()
    print(f"step {t['train_step_us']:.1f} us (CPU {t['train_step_cpu_us']:.1f}) = "
          f"{t['step_over_floor']:.2f}x the arithmetic floor "
          f"({t['step_flops'] / 1e6:.2f} MFLOP at the {t['sgemm_gflops']:.0f} GFLOP/s of sgemm "
          f"sampled beside it: {t['step_floor_us']:.1f} us); "
          f"subnormals in the trained model: {res['trained_subnormals']}")
    for a in t["alarms"]:
        print(f"ALARM: {a}")
    worst = max(v for k, v in res["check"].items() if not k.startswith("step "))
    print(f"check vs NumPy: per-layer worst relative error {worst:.2e} "
          f"(one full step: loss rel {res['check']['step loss rel']:.1e}, "
          f"params max|diff| = {res['check']['step params max|diff|/lr']:.3g} lr)")
    print(f"benchmark wall time (excluding cold compile): {res['bench_wall_s']:.1f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON to FILE")
    ap.add_argument("--repeat", type=int, default=11,
                    help="timed samples per measurement (default 11)")
    ap.add_argument("--compile-repeat", type=int, default=1,
                    help="cold-compile subprocesses, median reported (default 1)")
    ap.add_argument("--skip-compile", action="store_true",
                    help="skip the compile-time subprocesses")
    ap.add_argument("--trained-epochs", type=int, default=100,
                    help="canonical epochs before the trained-model epoch (default 100)")
    ap.add_argument("--long", action="store_true",
                    help="instead: time early and late epochs of whole runs (bench.long)")
    args, rest = ap.parse_known_args(argv)
    if args.long:
        from bench import long

        return long.main(rest + (["--json", args.json] if args.json else []))
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.repeat < 1 or args.compile_repeat < 1 or args.trained_epochs < 1:
        ap.error("--repeat, --compile-repeat and --trained-epochs must be >= 1")

    res = {
        "machine": dict(machine(), thread_env={v: os.environ.get(v) for v in _THREAD_VARS}),
        "load_before": loadavg(),
        "repeat": args.repeat,
        "config": {"lr": LR, "betas": [BETA1, BETA2], "eps": EPS, "data": "default",
                   "batch": BATCH, "layer_batches": list(LAYER_BATCHES),
                   "arch": "default", "seed": 0, "trained_epochs": args.trained_epochs},
    }
    if args.skip_compile:
        res.update(compile_s=None, warm_start_s=None)
    else:
        print("timing cold compile in a subprocess ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        st = measure_startup(args.compile_repeat)
        res.update(st)
        cold_wall = sum(r["process_s"] for r in st["compile_runs"])
    t_start = time.perf_counter()
    res["roofline"] = roofline()

    print(f"training {args.trained_epochs} epochs for the trained state ...", file=sys.stderr,
          flush=True)
    data, trained = default_data_and_trained(args.trained_epochs)
    res["trained_subnormals"] = _subnormals(trained)
    X = data.train
    order = np.random.default_rng(0).permutation(X.shape[0]).astype(np.int64)
    check = {}
    suite = Suite(TARGET_S)
    print("warming up and calibrating ...", file=sys.stderr, flush=True)
    specs = add_layers(suite, Autoencoder("default", seed=0), X, check)
    add_training(suite, X, order, trained)
    print(f"timing {len(suite.items)} measurements x {args.repeat} rounds ...",
          file=sys.stderr, flush=True)
    suite.sample(args.repeat)
    res["layers"] = layer_rows(suite, specs)
    res.update(training_results(suite, order, res["roofline"]))
    check.update(check_step(X, order))
    res["check"] = check
    res["load_after"] = loadavg()
    res["bench_wall_s"] = time.perf_counter() - t_start
    if not args.skip_compile:
        # the warm-start subprocesses count towards the benchmark's own time
        res["bench_wall_s"] += (t_start - t0) - cold_wall

    print_report(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
    ``epoch_fresh_ms < 0.8 x epoch_fresh_expected_ms``: a state-dependent
    slowdown.  A fresh Adam does less work than a persistent one (no moments,
    one divide and no square root per entry), so its epoch is predicted as
    ``epoch_ms`` less 200 times the difference of the Adam rows timed alone
    (``adam_us``, ``adam_fresh_us``, both halves); slow persistent moments
    (subnormals) inflate the plain epoch and not the prediction's Adam rows.
``train_step_us``
    ``epoch_ms / 200``: the per-step cost inside compiled code.
    ``train_step_call_us`` is one ``train_epoch`` call from Python with an order
    of exactly 5 indices (one step), which adds the dispatch of 23 arguments
    and the kernel's per-call buffer allocations.  ``step_floor_us`` is the
    step's matrix arithmetic (forward, weight gradient, and input gradient of
    every layer but the first: ``step_flops``) at the one-thread sgemm rate
    (``sgemm_gflops``: 256 x 256 x 256 float32, sampled round-robin with the
    other rows, so a slower machine slows both); ``step_over_floor`` the ratio.
    That floor leaves out Adam, which is bound by one divide and one square
    root per parameter (``adam_entries``), not by multiply-adds:
    ``sqrt_div_ns`` is the time per entry of Adam's ``m / (sqrt(v) c + eps)``
    on an array in L1 (``bench._timing.sqrt_div_loop``, sampled beside the
    step), ``adam_floor_us`` that for every parameter, ``step_full_floor_us``
    the sum of both floors and ``step_over_full_floor`` the step against it.
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
import sys  # noqa: E402
import time  # noqa: E402


import numpy as np  # noqa: E402

from bench._layers import (  # noqa: E402
    LAYER_BATCHES,
    _ae_restore,
    _ae_state,
    _train_args,
    add_layers,
    layer_rows,
)
from bench._numpy_ref import BETA1, BETA2, EPS, LR, NumpyAE  # noqa: E402
from bench._startup import measure_startup  # noqa: E402
from bench._timing import (SQRT_DIV_ENTRIES, Suite, loadavg, machine, pyloop,  # noqa: E402
                           roofline, sqrt_div_loop)
from sparseae.kernels import cpu  # noqa: E402
from sparseae.model import Autoencoder  # noqa: E402

BATCH = 5
TARGET_S = 0.02  # wall time of one timed sample (n calls)
TRAINED_LIMIT = 1.3  # alarm when a trained model's epoch is slower than this x a fresh one
FRESH_ADAM_LIMIT = 0.8  # ... or a fresh-Adam epoch faster than this x its prediction

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
    # ... and the divide/square-root rate that bounds Adam
    suite.add("sqrt_div", pyloop(sqrt_div_loop()))

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
    # a fresh Adam does less (no moments, no square root): the fresh-Adam epoch
    # should cost the plain one less the difference of the Adam rows timed alone
    rows = [("adam_update", h) for h in ("encoder", "decoder")]
    out["adam_us"] = sum(suite.median(k) for k in rows) * 1e6
    out["adam_fresh_us"] = sum(suite.median(k + ("fresh",)) for k in rows) * 1e6
    out["epoch_fresh_expected_ms"] = (out["epoch_ms"]
                                      - steps * (out["adam_us"] - out["adam_fresh_us"]) / 1e3)
    out["fresh_adam_over_expected"] = out["epoch_fresh_ms"] / out["epoch_fresh_expected_ms"]
    out["step_flops"] = step_flops(Autoencoder("default", seed=0))
    out["sgemm_gflops"] = 2 * 256 ** 3 / suite.median("sgemm") / 1e9
    out["step_floor_us"] = out["step_flops"] / (out["sgemm_gflops"] * 1e3)
    out["step_over_floor"] = out["train_step_us"] / out["step_floor_us"]
    out["sqrt_div_ns"] = suite.median("sqrt_div") / SQRT_DIV_ENTRIES * 1e9
    out["adam_entries"] = Autoencoder("default", seed=0).n_params
    out["adam_floor_us"] = out["adam_entries"] * out["sqrt_div_ns"] / 1e3
    out["step_full_floor_us"] = out["step_floor_us"] + out["adam_floor_us"]
    out["step_over_full_floor"] = out["train_step_us"] / out["step_full_floor_us"]
    alarms = []
    if out["trained_over_fresh_model"] > TRAINED_LIMIT:
        alarms.append(f"a trained model's epoch takes {out['trained_over_fresh_model']:.2f}x a "
                      f"fresh model's (limit {TRAINED_LIMIT}): subnormals or another "
                      "state-dependent slowdown")
    if out["fresh_adam_over_expected"] < FRESH_ADAM_LIMIT:
        alarms.append(f"a fresh-Adam epoch takes {out['fresh_adam_over_expected']:.2f}x what "
                      "the plain epoch less the Adam rows' difference predicts (expected >= "
                      f"{FRESH_ADAM_LIMIT}): the persistent moments are slow (subnormals?)")
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
          f"L1 read {roof['l1_gbs']:.0f} GB/s, L2 read {roof['l2_gbs']:.0f} GB/s, "
          f"divide + square root {roof['sqrt_div_ns']:.3f} ns per float32")
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
        elif key == "epoch_fresh":
            print(f"   x{t[key + '_ms'] / t['epoch_ms']:.2f} of a fresh model's; "
                  f"x{t['fresh_adam_over_expected']:.2f} of its prediction "
                  f"({t['epoch_fresh_expected_ms']:.3f}: Adam rows {t['adam_us']:.1f} us "
                  f"persistent, {t['adam_fresh_us']:.1f} fresh)")
        else:
            print(f"   x{t[key + '_ms'] / t['epoch_ms']:.2f} of a fresh model's")
    print()
    print(f"step {t['train_step_us']:.1f} us (CPU {t['train_step_cpu_us']:.1f}) = "
          f"{t['step_over_floor']:.2f}x the arithmetic floor "
          f"({t['step_flops'] / 1e6:.2f} MFLOP at the {t['sgemm_gflops']:.0f} GFLOP/s of sgemm "
          f"sampled beside it: {t['step_floor_us']:.1f} us)")
    print(f"     = {t['step_over_full_floor']:.2f}x the floor with Adam's divide and square root "
          f"({t['adam_entries']:,} of each at the {t['sqrt_div_ns']:.3f} ns per entry measured "
          f"beside it: {t['adam_floor_us']:.1f} us more, {t['step_full_floor_us']:.1f} us in all); "
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

"""GPU check and benchmark of sparseae's numba.cuda kernels (``kernels/cuda.py``).

Run on a machine with an NVIDIA GPU, from the repository root, without
installing the package::

    PYTHONPATH=. python3 -m bench.gpu            # or: python3 bench/gpu.py
    PYTHONPATH=. python3 -m bench.gpu --quick    # fewer sizes and repeats

If numba-cuda cannot compile with the installed numpy (numba-cuda 0.30.4 with
numpy 2.5 fails with ``module 'numpy' has no attribute 'row_stack'``, see
``shared/GPU.md``), put numpy 2.4 first on the path.  Fetch the wheel where
there is an index (``pip download numpy==2.4.6 --only-binary=:all:
--python-version 3.12 --platform manylinux_2_28_x86_64 --no-deps -d .whl``;
``.whl/`` is git-ignored, carry it), then on the GPU machine::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/numpy-2.4.6-*.whl
    PYTHONPATH=/tmp/site:. python3 -m bench.gpu

1. Checks, CUDA against the CPU kernels on random inputs: the default
   architecture (encoder 1000-30-10, decoder 10-30-1000), binary data
   1000 x 1000, a few pairs with 30 % of the weights pruned, persistent and
   fresh Adam, fused VARIANCE statistics; ``evaluate_l1_many``,
   ``all_pairs_l1`` and ``conjunctive_marks_many`` likewise.  Prints max
   relative differences (``max|gpu - cpu| / max|cpu|`` per array).
2. Training-kernel variants (threads per block, register cap, unroll,
   software pipelining, shared-memory carveout) timed on one epoch at
   P = 300; the fastest is used for the rest (``--no-variants``: only the
   module's defaults).
3. Timing (medians after warm-up, CUDA events around the launch, arrays
   resident on the GPU): one training step (batch 5) and one epoch (1000
   samples, batch 5: 200 steps) for P = 1, 10, 300, 3000 networks; ms per
   step and network-steps per second.  Plus one epoch at P = 300 through the
   numpy interface (host copies in and out) for comparison.

Prints a short table last; writes every number to ``$OUT/gpu.json`` when
``OUT`` is set (or to ``--json FILE``).  Lockstep sweeps (the gecco25
Lipi-AE-S sweep of 30 trials x 5 epochs, the paper's table) are timed by
``bench/gpu_sweep.py``; ``bench/gpu_session.sh`` runs both in one device call.  A size that fails is reported, not
fatal.  About 100 s on an H200.

Measured on an H200 (numba-cuda 0.30.4; the defaults TPB_TRAIN 256,
TRAIN_MAX_REGISTERS 80, UNROLL 4): step of one network 0.15 ms (inside an
epoch); 1.20 M network-steps/s at P = 300 (49.9 ms per epoch), 1.42 M at
P = 3000; checks within 6e-5 of the CPU kernels (fresh Adam, the most
sensitive), 1e-6 otherwise, CONJUNCTIVE marks identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

# numba-cuda's occupancy and implicit-copy warnings would drown the report
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")
os.environ.setdefault("NUMBA_CUDA_WARN_ON_IMPLICIT_COPY", "0")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _import_kernels():
    """``sparseae.kernels`` lives in ``kernels/`` (setup.cfg's package_dir): map
    it by hand when the checkout is on PYTHONPATH but not installed."""
    try:
        from sparseae.kernels import cpu  # noqa: F401
    except ModuleNotFoundError:
        import sparseae

        spec = importlib.util.spec_from_file_location(
            "sparseae.kernels", REPO / "kernels" / "__init__.py",
            submodule_search_locations=[str(REPO / "kernels")])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sparseae.kernels"] = mod
        spec.loader.exec_module(mod)
        sparseae.kernels = mod
    from sparseae.kernels import cpu, cuda

    return cpu, cuda


cpu, ck = _import_kernels()
from sparseae._options import ADAM_BETAS, ADAM_EPS  # noqa: E402
from sparseae.kernels.contract import AdamConfig, Half  # noqa: E402
from sparseae.model import Architecture  # noqa: E402

from bench._gpu_checks import ARCH as _ARCH  # noqa: E402
from bench._gpu_checks import binary_data, population, run_checks  # noqa: E402
from bench._gpu_report import device, environment, print_table  # noqa: E402

B1, B2 = ADAM_BETAS
EPS = ADAM_EPS
LR = 1e-3
BATCH = 5
N_SAMPLES = 1000
DIM = 1000
SIZES = (1, 10, 300, 3000)
ARCH = "default"
STEPS = 200  # one epoch: N_SAMPLES / BATCH


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------ timing


class DevicePop:
    """A population resident on the GPU, and a training plan over it."""

    def __init__(self, P, rng, X_dev, steps):
        c = ck.cuda
        E, D = population(P, rng)
        self.P = P
        self.E, self.D = E, D
        self.dev = {k: c.to_device(v) for k, v in dict(
            PE=E.params, ME=E.mask, mE=E.m, vE=E.v, sE=E.step,
            PD=D.params, MD=D.mask, mD=D.m, vD=D.v, sD=D.step).items()}
        n = steps * BATCH
        orders = np.stack([rng.permutation(N_SAMPLES)[:n] for _ in range(min(P, 8))])
        self.orders = c.to_device(orders[np.arange(P) % len(orders)])
        self.X = X_dev
        self.lrs = c.to_device(np.full(P, LR))

    def plan(self, with_stats=False):
        d = self.dev
        return ck._TrainPlan(Half(d["PE"], d["ME"], d["mE"], d["vE"], d["sE"], self.E.table),
                             Half(d["PD"], d["MD"], d["mD"], d["vD"], d["sD"], self.D.table),
                             self.X, self.orders, BATCH, self.lrs,
                             AdamConfig(B1, B2, EPS, False), (None, None), with_stats)


def time_plan(plan, repeats, warmup=1):
    c = ck.cuda
    for _ in range(warmup):
        plan.launch()
    c.synchronize()
    times = []
    for _ in range(repeats):
        if hasattr(c, "event_elapsed_time"):
            a, b = c.event(), c.event()
            a.record()
            plan.launch()
            b.record()
            b.synchronize()
            times.append(c.event_elapsed_time(a, b))
        else:  # the simulator
            t0 = time.perf_counter()
            plan.launch()
            c.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def kernel_info(plan):
    k = plan.kernel
    info = {}
    for name in ("get_regs_per_thread", "get_local_mem_per_thread", "get_shared_mem_per_block"):
        try:
            v = getattr(k, name)()
            if isinstance(v, dict):
                v = list(v.values())[-1] if v else None
            info[name[4:]] = v
        except Exception as exc:  # not all numba versions have all of these
            info[name[4:]] = f"n/a ({type(exc).__name__})"
    info["dynamic_shared_bytes"] = plan.smem
    info["global_scratch"] = plan.smem == 0
    info["threads_per_block"] = plan.tpb
    return info


def try_variants(rng, X_dev, variants, P=300, steps=None, repeats=3):
    steps = STEPS if steps is None else steps
    res = []
    for tpb, maxreg, unroll, pipe, carve in variants:
        ck.TPB_TRAIN, ck.TRAIN_MAX_REGISTERS, ck.UNROLL, ck.PIPELINE, ck.TRAIN_CARVEOUT = (
            tpb, maxreg, unroll, pipe, carve)
        row = {"tpb": tpb, "max_registers": maxreg, "unroll": unroll, "pipeline": pipe,
               "carveout": carve}
        try:
            pop = DevicePop(P, rng, X_dev, steps)
            plan = pop.plan()
            t0 = time.perf_counter()
            plan.launch()
            ck.cuda.synchronize()
            row["first_call_s"] = round(time.perf_counter() - t0, 2)
            ms, _ = time_plan(plan, repeats)
            row["epoch_ms"] = ms
            row["net_steps_per_s"] = P * steps / (ms / 1e3)
            row.update(kernel_info(plan))
            del pop, plan
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["trace"] = traceback.format_exc()[-1500:]
        log(f"variant {json.dumps(row)}")
        res.append(row)
    return res


def time_sizes(rng, X_dev, sizes, repeats):
    rows = []
    for P in sizes:
        row = {"P": P}
        try:
            pop = DevicePop(P, rng, X_dev, STEPS)
            plan = pop.plan()
            ms, samples = time_plan(plan, repeats)
            row.update(epoch_ms=ms, epoch_samples_ms=samples, epoch_ms_per_step=ms / STEPS,
                       epoch_net_steps_per_s=P * STEPS / (ms / 1e3))
            # one training step: an epoch of exactly one batch
            pop1 = DevicePop.__new__(DevicePop)
            pop1.__dict__.update(pop.__dict__)
            pop1.orders = ck.cuda.to_device(np.ascontiguousarray(pop.orders.copy_to_host()[:, :BATCH]))
            plan1 = pop1.plan()
            ms1, _ = time_plan(plan1, max(repeats, 10), warmup=2)
            row.update(step_ms=ms1, step_net_steps_per_s=P / (ms1 / 1e3))
            # with the fused VARIANCE statistics
            stats_plan = pop.plan()
            stats_plan.with_stats = True
            c = ck.cuda
            stats_plan.stats_e = c.to_device(np.zeros((P, pop.E.n_units, 3)))
            stats_plan.stats_d = c.to_device(np.zeros((P, pop.D.n_units, 3)))
            mss, _ = time_plan(stats_plan, max(1, repeats // 2))
            row["epoch_stats_ms"] = mss
            del pop, pop1, plan, plan1, stats_plan
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["trace"] = traceback.format_exc()[-1500:]
        log(f"size {json.dumps({k: v for k, v in row.items() if k != 'epoch_samples_ms'})}")
        rows.append(row)
    return rows


def time_host_path(rng, X, P=None):
    P = min(300, max(SIZES)) if P is None else P
    """One epoch through the numpy interface: copies in and out included."""
    E, D = population(P, rng)
    orders = np.stack([rng.permutation(N_SAMPLES) for _ in range(P)])
    lrs = np.full(P, LR)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ck.train_epoch_many(E.half(slice(0, P)), D.half(slice(0, P)), X, orders, BATCH, lrs,
                            AdamConfig(B1, B2, EPS, False), (None, None), False)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"P": P, "epoch_ms_with_copies": statistics.median(times[1:])}


def cpu_baseline(rng, X):
    E, D = population(1, rng)
    orders = rng.permutation(N_SAMPLES)
    se, sd = np.zeros((E.n_units, 3)), np.zeros((D.n_units, 3))
    args = lambda: (E.half(0), D.half(0), X, orders, BATCH, LR,  # noqa: E731
                    AdamConfig(B1, B2, EPS, False), (se, sd), False)
    cpu.train_epoch(*args())
    t0 = time.perf_counter()
    cpu.train_epoch(*args())
    ms = (time.perf_counter() - t0) * 1e3
    return {"epoch_ms": ms, "net_steps_per_s": STEPS / (ms / 1e3)}


# ------------------------------------------------------------------ main


def main(argv=None):
    global ARCH, N_SAMPLES, DIM, STEPS
    ap = argparse.ArgumentParser(prog="python3 -m bench.gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes, variants and repeats")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-variants", action="store_true")
    # smoke-testing knobs (e.g. under NUMBA_ENABLE_CUDASIM=1 with tiny sizes)
    ap.add_argument("--arch", default=ARCH, help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=N_SAMPLES, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variant-p", type=int, default=300, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    ARCH = args.arch
    _ARCH[0] = ARCH
    DIM = Architecture.parse(ARCH).input_dim
    N_SAMPLES = args.samples
    STEPS = N_SAMPLES // BATCH
    t_start = time.perf_counter()
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.setswitchinterval(1e-4)  # smoke test under the simulator
    ok, why = ck.available()
    env = environment(ck)
    log(f"environment: {json.dumps(env)}")
    if not ok:
        log(why)
        return 2
    c = ck.cuda
    device(ck, env)
    log(f"device: {env['device']} cc {env['compute_capability']} "
        f"SMs {env.get('multiprocessors', '?')}")
    results = {"environment": env}
    rng = np.random.default_rng(2025)
    X = binary_data(rng, N_SAMPLES, DIM)

    t0 = time.perf_counter()
    results["checks"] = run_checks(rng, X)
    results["checks_s"] = round(time.perf_counter() - t0, 1)

    X_dev = c.to_device(X)
    knobs = ("tpb", "max_registers", "unroll", "pipeline", "carveout")
    default = (ck.TPB_TRAIN, ck.TRAIN_MAX_REGISTERS, ck.UNROLL, ck.PIPELINE, ck.TRAIN_CARVEOUT)
    if args.no_variants:
        variants = [default]
    elif args.quick:
        variants = [default, (128, None, 4, default[3], None)]
    else:
        variants = [default] + [v for v in [
            (256, 80, 4, False, None), (256, 80, 4, True, None), (256, 72, 4, False, None),
            (256, 80, 2, True, None), (256, 64, 4, False, None), (128, None, 4, False, None)]
            if v != default]
    results["variants"] = try_variants(rng, X_dev, variants, P=args.variant_p, repeats=3)
    good = [v for v in results["variants"] if "epoch_ms" in v]
    best = min(good, key=lambda v: v["epoch_ms"]) if good else dict(zip(knobs, default))
    (ck.TPB_TRAIN, ck.TRAIN_MAX_REGISTERS, ck.UNROLL, ck.PIPELINE,
     ck.TRAIN_CARVEOUT) = (best[k] for k in knobs)
    results["chosen"] = {k: best[k] for k in knobs}
    log(f"chosen variant: {results['chosen']}")

    sizes = (1, 10, 300) if args.quick else SIZES
    if args.sizes:
        sizes = tuple(int(v) for v in args.sizes.split(","))
    results["sizes"] = time_sizes(rng, X_dev, sizes, args.repeats)
    try:
        results["host_path"] = time_host_path(rng, X, P=min(300, max(sizes)))
    except Exception as exc:
        results["host_path"] = {"error": f"{type(exc).__name__}: {exc}"}
    log(f"host path: {json.dumps(results['host_path'])}")
    try:
        results["cpu"] = cpu_baseline(rng, X)
    except Exception as exc:
        results["cpu"] = {"error": f"{type(exc).__name__}: {exc}"}
    results["total_s"] = round(time.perf_counter() - t_start, 1)

    # ---- write, then the short table last
    text = json.dumps(results, indent=1, default=str)
    targets = [args.json] if args.json else []
    if os.environ.get("OUT"):
        targets.append(os.path.join(os.environ["OUT"], "gpu.json"))
    for t in targets:
        with open(t, "w") as f:
            f.write(text)

    print_table(results, best, args.variant_p, STEPS, BATCH)
    log(f"total {results['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

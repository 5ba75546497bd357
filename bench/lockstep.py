"""Lockstep sweeps: host-side cost per run-step, and lockstep vs worker processes.

    python -m bench.lockstep [--runs 64] [--epochs 2] [--repeats 3]

A lockstep group (``sparseae.lockstep``) trains every run's current pair in
one call, but each run still does its own host work per step in Python:
Lipi-AE-S's neighbourhood evaluation, tournament, copies to and from the work
row, evaluation, pruning decision and lr mutation.  On a GPU that host work
bounds a sweep's speed, so it is measured here alone, with the training call
replaced by a no-op, on gecco25 Lipi-AE-S runs (default architecture,
population 10):

* ``host us per run-step``: median over epochs of the wall time of one group
  step (an epoch's steps and its end of epoch, divided by 10) divided by the
  group's runs (no training), on one thread and on a pool of CPU-count
  threads (the runs' host work releases the GIL in the compiled kernels and
  large copies);
* ``train us per run-step``: the same with the real CPU training call
  (numba ``prange`` over the pairs), for scale.

Then a small gecco25 sweep (canonical and Lipi-AE-S variants) is run on the
CPU in worker processes, in lockstep, and in lockstep with overlap, and the
wall times printed with their ratio to the first (same results, tested).  The
estimate for a GPU sweep is ``steps x (runs x host us + launch)``.
"""

import argparse
import concurrent.futures as cf
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sparseae import lockstep
from sparseae.config import TrainConfig
from sparseae.kernels import cpu
from sparseae.runs import make_run


def gecco_lipi(seed, epochs, operator="random"):
    return TrainConfig.from_profile("gecco25", paradigm="lipi", operator=operator,
                                    schedule="exponential", epochs=epochs, seed=seed)


def time_steps(runs, repeats, train, pool=None):
    (g,) = lockstep.make_groups(runs)
    real = g.kernels

    class NoTrain:
        @staticmethod
        def train_epoch_many(enc, *a):
            return np.zeros(enc.params.shape[0])

    if not train:
        g.kernels = NoTrain
    for _ in range(10):  # the first epoch: compile, warm caches, the figure metric
        g.advance(pool)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(10):  # one epoch of the population of 10: epoch-end work included
            g.advance(pool)
        times.append((time.perf_counter() - t0) / 10)
    g.kernels = real
    return statistics.median(times) / len(runs)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.lockstep",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=64, help="runs in the timed group")
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs (of 10 group steps)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the sweep comparison")
    ap.add_argument("--trials", type=int, default=4, help="trials of the sweep comparison")
    a = ap.parse_args(argv)
    cpu.prepare()
    threads = os.cpu_count() or 1
    with cf.ThreadPoolExecutor(threads) as pool:
        for operator in ("random", "conjunctive"):
            host = {}
            for n, p in ((1, None), (threads, pool)):
                runs = [make_run(gecco_lipi(s, 400, operator)) for s in range(a.runs)]
                host[n] = time_steps(runs, a.repeats, False, p)
            runs = [make_run(gecco_lipi(s, 400, operator)) for s in range(a.runs)]
            full = time_steps(runs, a.repeats, True, pool)
            print(f"gecco25 lipi {operator:<11} {a.runs} runs, us per run-step: host "
                  f"{1e6 * host[1]:7.1f} on 1 thread, {1e6 * host[threads]:7.1f} on {threads} "
                  f"(ratio {host[threads] / host[1]:.2f}); with CPU training {1e6 * full:7.1f}")

    from sparseae import sweep as sw

    spec = {"trials": a.trials, "base": {"profile": "gecco25", "epochs": a.epochs},
            "variant": [{"name": "canonical conj", "paradigm": "canonical",
                         "operator": "conjunctive"},
                        {"name": "lipi random", "paradigm": "lipi", "operator": "random"}]}
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, kw in (("workers", {}), ("lockstep", {"lockstep": True}),
                         ("lockstep+overlap", {"lockstep": True, "lockstep_overlap": True})):
            t0 = time.perf_counter()
            st = sw.run_sweep(spec, Path(tmp) / f"{mode}.h5", **kw)
            walls[mode] = time.perf_counter() - t0
            if mode == "workers":
                walls[mode + f" ({st['workers']})"] = walls.pop(mode)
    base = next(iter(walls.values()))
    print(f"sweep of {2 * a.trials} gecco25 runs x {a.epochs} epochs on the CPU: " + ", ".join(
        f"{m} {w:.2f} s ({w / base:.2f})" for m, w in walls.items()))

if __name__ == "__main__":
    main()

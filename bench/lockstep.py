"""Lockstep sweeps: host-side cost per run-step, and lockstep vs worker processes.

    python -m bench.lockstep [--runs 64] [--epochs 2] [--repeats 3]

A lockstep group (``sparseae.lockstep``) trains every run's current pair in
one call, but each run still does its own host work per step in Python:
Lipi-AE-S's neighbourhood evaluation, tournament, copies to and from the work
row, evaluation, pruning decision and lr mutation.  On a GPU that host work
bounds a sweep's speed, so it is measured here alone, with the training call
replaced by a no-op, on gecco25 Lipi-AE-S runs (default architecture,
population 10):

* ``us per run-step without training``: median over epochs of the wall time
  of one group step (an epoch's steps and its end of epoch, divided by 10)
  divided by the group's runs, on one thread and on a pool of CPU-count
  threads, split into the runs' own host work (Python: tournaments, row
  copies, pruning decisions, lr mutation) and the group's batched evaluation
  calls (every run's all-pairs L1, replacement L1, population statistics and
  figure metric of a step in one call each: on a GPU these run on the
  device);
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
    times, host, evals = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        h0, e0 = g.host_seconds, g.eval_seconds
        for _ in range(10):  # one epoch of the population of 10: epoch-end work included
            g.advance(pool)
        times.append((time.perf_counter() - t0) / 10)
        host.append((g.host_seconds - h0) / 10)
        evals.append((g.eval_seconds - e0) / 10)
    g.kernels = real
    n = len(runs)
    return (statistics.median(times) / n, statistics.median(host) / n,
            statistics.median(evals) / n)


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
            step = {}
            for n, p in ((1, None), (threads, pool)):
                runs = [make_run(gecco_lipi(s, 400, operator)) for s in range(a.runs)]
                step[n] = time_steps(runs, a.repeats, False, p)
            runs = [make_run(gecco_lipi(s, 400, operator)) for s in range(a.runs)]
            full = time_steps(runs, a.repeats, True, pool)[0]
            (t1, h1, e1), (tn, hn, en) = step[1], step[threads]
            print(f"gecco25 lipi {operator:<11} {a.runs} runs, us per run-step without training: "
                  f"{1e6 * t1:6.1f} on 1 thread (runs' own host work {1e6 * h1:5.1f}, batched "
                  f"evaluations {1e6 * e1:5.1f}), {1e6 * tn:6.1f} on {threads} (host "
                  f"{1e6 * hn:5.1f}, evaluations {1e6 * en:5.1f}); with CPU training "
                  f"{1e6 * full:6.1f}")

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

"""Pruning table: each operator with a schedule, over several seeds, next to the unpruned run.

Run from the repository root::

    python -m bench.pruning [--seeds 5] [--epochs 400] [--schedule exponential] [--workers 2]

Prints, per operator, the median (and min-max) test L1 and preserved fraction
over the seeds, the median difference in test L1 to the unpruned run with the
same seed, and the time pruning adds to an epoch (prune seconds / train
seconds, measured inside each run).
"""

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

OPERATORS = ("none", "conjunctive", "random", "variance", "magnitude")


def one(args):
    operator, seed, epochs, schedule = args
    from sparseae import CanonicalRun, TrainConfig

    run = CanonicalRun(TrainConfig(operator=operator, seed=seed, epochs=epochs, schedule=schedule))
    s = run.run()
    return operator, seed, s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--schedule", default="exponential")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--operators", default=",".join(OPERATORS))
    a = ap.parse_args(argv)
    operators = a.operators.split(",")
    jobs = [(op, seed, a.epochs, a.schedule) for op in operators for seed in range(a.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - t0
    by = {}
    for op, seed, s in results:
        by.setdefault(op, {})[seed] = s
    base = by.get("none", {})
    print(f"canonical, default profile, {a.epochs} epochs, schedule {a.schedule}, "
          f"{a.seeds} seeds (0..{a.seeds - 1}), wall {wall:.0f} s with {a.workers} workers")
    print(f"{'operator':<12} {'test L1 median [min-max]':<28} {'dL1 vs none':>11} "
          f"{'preserved median [min-max]':<28} {'enc':>6} {'dec':>6} {'prune/train':>11}")
    for op in operators:
        runs = by[op]
        l1 = [runs[s]["test_l1"] for s in sorted(runs)]
        pr = [runs[s]["preserved"] for s in sorted(runs)]
        d = [runs[s]["test_l1"] - base[s]["test_l1"] for s in sorted(runs) if s in base]
        over = [runs[s]["prune_seconds"] / runs[s]["train_seconds"] for s in sorted(runs)]
        enc = statistics.median(runs[s]["preserved_encoder"] for s in runs)
        dec = statistics.median(runs[s]["preserved_decoder"] for s in runs)
        print(f"{op:<12} {statistics.median(l1):.4f} [{min(l1):.4f}-{max(l1):.4f}]      "
              f"{statistics.median(d) if d else float('nan'):>+11.4f} "
              f"{statistics.median(pr):.3f} [{min(pr):.3f}-{max(pr):.3f}]          "
              f"{enc:>6.3f} {dec:>6.3f} {100 * statistics.median(over):>10.1f}%")


if __name__ == "__main__":
    main()

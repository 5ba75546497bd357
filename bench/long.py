"""Whole runs, early epochs against late ones: does training slow down as it goes?

Run from the repository root::

    python -m bench.long                  # default canonical and default Lipi-AE-S, 400 epochs
    python -m bench.long --epochs 100 --which canonical
    python -m bench.kernels --long        # the same

A state-dependent slowdown (float32 subnormals in decayed Adam moments and
saturated outputs, before ``kernels.fpenv``) hides from benchmarks that time a
freshly initialised model.  This one trains the default ``sparseae train``
configurations to the end and compares the median wall and CPU time of the
first epochs (2-11; epoch 1 includes first-call work) with that of the last
ten.  ``late/early`` above 1.2 prints an ALARM line.
"""

import argparse
import json
import os
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

LIMIT = 1.2
WINDOW = 10


def _config(which, epochs):
    from sparseae import TrainConfig

    if which == "canonical":
        return TrainConfig(paradigm="canonical", epochs=epochs)
    if which == "lipi":
        return TrainConfig(paradigm="lipi", epochs=epochs)
    if which == "lipi-gecco25":
        return TrainConfig.from_profile("gecco25", paradigm="lipi", epochs=epochs,
                                        operator="random", schedule="exponential")
    raise ValueError(which)


def time_run(which, epochs):
    """Per-epoch wall and thread CPU seconds of one whole run."""
    from sparseae import CanonicalRun, LipiRun
    from sparseae.kernels import cpu

    cpu.prepare()
    config = _config(which, epochs)
    run = (CanonicalRun if config.paradigm == "canonical" else LipiRun)(config)
    wall, cpu_s = [], []
    for _ in range(epochs):
        c0, t0 = time.thread_time(), time.perf_counter()
        run.run_epoch()
        wall.append(time.perf_counter() - t0)
        cpu_s.append(time.thread_time() - c0)
    w = min(WINDOW, max(1, (epochs - 1) // 2))
    early = slice(1, 1 + w)
    late = slice(epochs - w, epochs)
    out = {
        "which": which, "epochs": epochs, "window": w,
        "early_wall_s": statistics.median(wall[early]),
        "late_wall_s": statistics.median(wall[late]),
        "early_cpu_s": statistics.median(cpu_s[early]),
        "late_cpu_s": statistics.median(cpu_s[late]),
        "total_wall_s": sum(wall),
        "wall_s": wall, "cpu_s": cpu_s,
    }
    out["late_over_early"] = out["late_cpu_s"] / out["early_cpu_s"]
    return out


def main(argv=None):
    from bench._timing import loadavg, machine

    ap = argparse.ArgumentParser(prog="python -m bench.long", description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--which", action="append",
                    choices=["canonical", "lipi", "lipi-gecco25"],
                    help="runs to time (repeatable; default canonical and lipi)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if args.epochs < 3:
        ap.error("--epochs must be >= 3")
    m = machine()
    res = {"machine": m, "load_before": loadavg(), "runs": []}
    print(f"whole runs on {m['cpu']} (LLVM target {m['llvm_cpu']}); load {res['load_before']}")
    print(f"{'run':<14} {'epochs':>6} {'early s/epoch':>14} {'late s/epoch':>13} "
          f"{'late/early (CPU)':>17} {'total s':>8}")
    for which in args.which or ["canonical", "lipi"]:
        r = time_run(which, args.epochs)
        res["runs"].append(r)
        print(f"{which:<14} {r['epochs']:6d} {r['early_wall_s']:8.4f} [{r['early_cpu_s']:.4f}] "
              f"{r['late_wall_s']:7.4f} [{r['late_cpu_s']:.4f}] {r['late_over_early']:17.2f} "
              f"{r['total_wall_s']:8.1f}", flush=True)
        if r["late_over_early"] > LIMIT:
            print(f"ALARM: {which}: late epochs take {r['late_over_early']:.2f}x the early ones "
                  f"(CPU time; limit {LIMIT})")
    res["load_after"] = loadavg()
    print(f"(medians of epochs 2-{1 + r['window']} and of the last {r['window']}; wall seconds, "
          f"thread CPU seconds in brackets; load after {res['load_after']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

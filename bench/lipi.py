"""Lipi-AE-S end-to-end benchmark: seconds per epoch, memory over a long run, quality.

Run from the repository root::

    python -m bench.lipi speed   [--epochs 30] [--profile gecco25] [--one-at-a-time]
    python -m bench.lipi memory  [--epochs 400]           # RSS every 50 epochs
    python -m bench.lipi quality [--seeds 5] [--epochs 400] [--workers 2] [FIELD=VALUE ...]

``speed`` times whole epochs (median, wall and process CPU time) of a
profile's Lipi-AE-S (population 10, radius 1, default architecture) on the
paper's data size (1000 training samples of dim 1000, batch 5), on numba's
threads (``NUMBA_NUM_THREADS=1`` for one core).
``quality`` prints the best centre's test L1 and preserved fraction per seed and
their medians for the given config fields (e.g. ``operator=random
prune_probability=0.05``).
"""

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def speed(epochs: int, profile: str, waves: bool = True) -> None:
    import numba

    from sparseae import LipiRun, TrainConfig
    from sparseae.kernels import cpu

    cpu.prepare()
    run = LipiRun(TrainConfig.from_profile(profile, paradigm="lipi", epochs=epochs))
    run.waves = waves
    times, cpus = [], []
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        run.run_epoch()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    med = statistics.median(times[1:])
    how = "cells in waves" if waves else "one cell at a time"
    print(f"Lipi-AE-S {profile} profile, population 10, radius 1, default arch, 1000 samples, "
          f"batch 5, {how}, {numba.get_num_threads()} numba threads: {med:.4f} s/epoch "
          f"(median of {epochs - 1}; process CPU {statistics.median(cpus[1:]):.4f} s), "
          f"400 epochs ~ {400 * med:.0f} s")


def memory(epochs: int) -> None:
    from sparseae import LipiRun, TrainConfig

    run = LipiRun(TrainConfig(paradigm="lipi", epochs=epochs, operator="random",
                              prune_probability=0.05))
    marks = []
    for e in range(epochs):
        run.run_epoch()
        if e % 50 == 0 or e == epochs - 1:
            marks.append((e + 1, _rss_mb()))
            print(f"epoch {e + 1:4d}  RSS {marks[-1][1]:.1f} MB", flush=True)
    print(f"RSS growth from epoch {marks[0][0]} to {marks[-1][0]}: "
          f"{marks[-1][1] - marks[0][1]:+.1f} MB")


def _quality_one(args):
    fields, seed = args
    from sparseae import LipiRun, TrainConfig

    run = LipiRun(TrainConfig(paradigm="lipi", seed=seed, **fields))
    s = run.run()
    return seed, s["test_l1"], s["preserved"], s["mean_l1"], s["seconds"]


def quality(seeds: int, workers: int, fields: dict) -> None:
    jobs = [(fields, seed) for seed in range(seeds)]
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_quality_one, jobs))
    print(f"Lipi-AE-S default profile {fields}")
    for seed, l1, pres, mean_l1, sec in rows:
        print(f"  seed {seed}: best test L1 {l1:.4f}  preserved {pres:.3f}  "
              f"mean L1 {mean_l1:.4f}  {sec:.0f} s")
    print(f"  median best test L1 {statistics.median(r[1] for r in rows):.4f}, "
          f"median preserved {statistics.median(r[2] for r in rows):.3f}")


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["speed", "memory", "quality"])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="speed: visit the cells one at a time instead of in waves")
    ap.add_argument("fields", nargs="*", help="FIELD=VALUE config overrides (quality)")
    a = ap.parse_intermixed_args(argv)
    if a.what == "speed":
        speed(a.epochs or 30, a.profile, waves=not a.one_at_a_time)
    elif a.what == "memory":
        memory(a.epochs or 400)
    else:
        fields = dict(kv.split("=", 1) for kv in a.fields)
        fields = {k: _value(v) for k, v in fields.items()}
        fields.setdefault("epochs", a.epochs or 400)
        quality(a.seeds, a.workers, fields)


if __name__ == "__main__":
    main()

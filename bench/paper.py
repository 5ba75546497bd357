"""Compare our gecco25 sweep results with the paper's table (ALGORITHM.md section 7).

Run the sweeps first (the trial count is yours; the paper used 30)::

    sparseae sweep configs/gecco25/canonical.toml --trials 10 --out canonical.h5
    sparseae sweep configs/gecco25/lipi.toml      --trials 10 --out lipi.h5
    sparseae sweep configs/gecco25/schedules.toml --trials 3  --out schedules.h5
    python -m bench.paper canonical.h5 lipi.h5 schedules.h5

or all of it in one command, on any executor, resumable (Ctrl-C, rerun)::

    python -m bench.paper --run --trials 30 --cluster local:2 --dir paper

which runs the three sweeps into ``paper/{canonical,lipi,schedules}.h5`` (on one
Dask cluster; ``--workers N`` uses local worker processes instead), then prints
the comparison.  Every invocation ends with the measured cost: per row the
median seconds of a run, the CPU total, and an estimate of the whole table at
``--trials`` trials on ``--cores`` single-threaded workers (the runs dealt in
sweep order to the first free worker, with the measured per-row times).

For every row it prints our median of the figures' metric (``mean_l1``: mean
training-set L1 of the centres at the end) and of the preserved fraction (the
mean over the centres, the reference's zero-count accounting) next to the
paper's value, whether each is within tolerance (L1 0.03, preserved 0.07), and
then checks the paper's headline orderings.  Missing rows are skipped.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

L1_TOL, PRESERVED_TOL = 0.03, 0.07

#: variant name -> (paper mean L1, paper preserved or None), read off the paper's figures
PAPER = {
    "canonical none": (0.267, 1.00),
    "canonical conjunctive-exponential": (0.270, 0.75),
    "canonical random-exponential": (0.50, 0.79),
    "canonical variance-exponential": (0.50, 0.43),
    "lipi none": (0.145, 1.00),
    "lipi random-exponential": (0.104, 0.87),
    "lipi conjunctive-final_n": (0.152, 0.80),
    "lipi variance-population": (0.157, 1.00),
    "lipi small random-exponential": (0.36, None),
    "operator=conjunctive,schedule=decrease": (0.28, None),
    "operator=conjunctive,schedule=fixed": (0.28, None),
    "operator=random,schedule=decrease": (0.26, None),
    "operator=random,schedule=fixed": (0.20, None),
    "operator=variance,schedule=decrease": (0.50, None),
}
LATE = ("exponential", "final_n", "increase", "population")
EARLY = ("decrease", "fixed")


def _preserved(summary) -> float:
    if "centres_preserved" in summary:
        return float(np.mean(summary["centres_preserved"]))
    return summary["preserved"]


def collect(paths):
    from sparseae.report import load_results

    runs = {}
    for path in paths:
        for r in load_results(path):
            runs.setdefault(r["variant"], []).append(r)
    return runs


def medians(runs):
    out = {}
    for name, rs in runs.items():
        out[name] = (statistics.median(r["summary"]["mean_l1"] for r in rs),
                     statistics.median(_preserved(r["summary"]) for r in rs),
                     len(rs), sum(r["seconds"] for r in rs))
    return out


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = ("canonical", "lipi", "schedules")


def run_table(trials: int, folder: str, cluster=None, workers=None) -> tuple:
    """Run (or resume) the paper's three sweeps into ``folder``; return the files and
    whether a Ctrl-C interrupted them."""
    import signal
    import threading

    from sparseae.sweep import load_spec, run_sweep

    os.makedirs(folder, exist_ok=True)
    stop, abort = threading.Event(), threading.Event()

    def on_sigint(*_):
        if stop.is_set():
            abort.set()
            print("\nabandoning the runs in flight", file=sys.stderr, flush=True)
        else:
            stop.set()
            print("\ninterrupted: finishing the runs in flight (Ctrl-C again to abandon "
                  "them)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    paths = [os.path.join(folder, f"{name}.h5") for name in SWEEPS]
    specs = [load_spec(os.path.join(ROOT, "configs", "gecco25", f"{name}.toml"))
             for name in SWEEPS]
    try:
        with _executor(cluster, specs, trials, workers) as kw:
            for name, spec, path in zip(SWEEPS, specs, paths):
                if stop.is_set():
                    break
                t0 = time.monotonic()

                def progress(done, total, eta, name=name, t0=t0):
                    if done and (done == total or done % max(1, total // 20) == 0):
                        print(f"{name}: {done}/{total} runs  elapsed "
                              f"{time.monotonic() - t0:.0f} s  eta {eta or 0:.0f} s",
                              file=sys.stderr, flush=True)

                st = run_sweep(spec, path, trials=trials, stop=stop, abort=abort,
                               progress=progress, **kw)
                print(f"{name}: {st['done']} runs done, {st['skipped']} skipped -> {path} "
                      f"(wall {st['wall_seconds']:.0f} s, run seconds {st['run_seconds']:.0f})",
                      file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    return [p for p in paths if os.path.exists(p)], stop.is_set()


class _executor:
    """``run_sweep`` keywords: one Dask client for the three sweeps, or local workers."""

    def __init__(self, cluster, specs, trials, workers):
        self.cluster, self.pending = cluster, sum(len(s.variants) for s in specs) * trials
        self.specs, self.workers = specs, workers
        self.ctx = None

    def __enter__(self):
        if self.cluster is None:
            return {"workers": self.workers}
        from sparseae.sweep import cluster as dc

        table = dict(self.specs[0].cluster)
        self.ctx = dc.connect(self.cluster, table, self.pending)
        client, text = self.ctx.__enter__()
        link = dc.dashboard(client)
        print(f"cluster: {text}" + (f", dashboard {link}" if link else ""), file=sys.stderr)
        return {"client": client}

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


def _cost(run) -> float:
    """A run's CPU seconds where recorded (a busy shared machine inflates wall times),
    else its wall seconds."""
    return run.get("cpu_seconds", run["seconds"])


def estimate(runs: dict, trials: int, cores: int) -> dict:
    """The table at ``trials`` trials on ``cores`` workers from per-row run times."""
    rows = {name: statistics.median(_cost(r) for r in rs) for name, rs in runs.items()}
    order = [name for _ in range(trials) for name in rows]  # trial-major, as sweeps run
    free = [0.0] * cores
    for name in order:
        i = min(range(cores), key=free.__getitem__)
        free[i] += rows[name]
    cpu = sum(rows.values()) * trials
    return {"rows": rows, "runs": len(order), "cpu_seconds": cpu, "wall_seconds": max(free),
            "longest_run": max(rows.values())}


def print_cost(runs: dict, trials: int, cores: int) -> None:
    if not runs:
        return
    every = [r for rs in runs.values() for r in rs]
    wall = sum(r["seconds"] for r in every)
    cpu = sum(_cost(r) for r in every)
    n = len(every)
    e = estimate(runs, trials, cores)
    print(f"measured: {n} runs, {wall / 60:.1f} min of run wall time, {cpu / 60:.1f} min of "
          f"run CPU time ({cpu / n:.1f} s per run on average; wall where no CPU time was "
          "recorded)")
    print(f"{'row':<42} {'n':>3} {'s/run':>7}   (median CPU seconds of a run)")
    for name, sec in sorted(e["rows"].items(), key=lambda kv: -kv[1]):
        print(f"{name:<42} {len(runs[name]):>3} {sec:>7.1f}")
    print(f"estimate for {trials} trials per row ({e['runs']} runs): "
          f"{e['cpu_seconds'] / 3600:.2f} CPU-hours; on {cores} single-threaded workers about "
          f"{e['wall_seconds'] / 60:.1f} min wall (the longest run alone {e['longest_run']:.0f}"
          f" s; runs dealt in sweep order to the first free worker; rows never measured are "
          f"left out)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", help="results files of sparseae sweep")
    ap.add_argument("--run", action="store_true",
                    help="run (or resume) the paper's three sweeps into --dir first")
    ap.add_argument("--trials", type=int, default=30,
                    help="trials per row for --run and the estimate (default 30, as the paper)")
    ap.add_argument("--dir", default="paper", help="folder of the results files of --run")
    ap.add_argument("--cluster", default=None,
                    help="with --run: local:N, tcp://HOST:PORT, slurm or pbs (Dask)")
    ap.add_argument("--workers", type=int, default=None,
                    help="with --run: local worker processes (default: one per core)")
    ap.add_argument("--cores", type=int, default=64,
                    help="workers of the estimate (default 64)")
    a = ap.parse_args(argv)
    if a.trials < 1 or a.cores < 1:
        ap.error("--trials and --cores must be at least 1")
    if a.cluster is not None and a.workers is not None:
        ap.error("--workers: not with --cluster (use --cluster local:N)")
    from sparseae.errors import SparseaeError

    paths = list(a.results)
    interrupted = False
    if a.run:
        if paths:
            ap.error("--run writes its own files (--dir); give no results files")
        try:
            paths, interrupted = run_table(a.trials, a.dir, a.cluster, a.workers)
        except SparseaeError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 2
    elif not paths:
        ap.error("give results files, or --run")
    runs = collect(paths) if paths else {}
    if runs:
        compare(runs)
    print_cost(runs, a.trials, a.cores)
    if interrupted:
        print(f"interrupted: rerun the same command to resume ({a.dir})", file=sys.stderr)
        return 130
    return 0


def compare(runs):
    med = medians(runs)
    print(f"{'row':<42} {'n':>3} {'mean L1':>8} {'paper':>6} {'ok':>3}  "
          f"{'preserved':>9} {'paper':>6} {'ok':>3}")
    hits = total = 0
    for name, (l1, pres, n, _) in med.items():
        p_l1, p_pres = PAPER.get(name, (None, None))
        ok_l1 = "" if p_l1 is None else ("yes" if abs(l1 - p_l1) <= L1_TOL else "NO")
        ok_p = "" if p_pres is None else ("yes" if abs(pres - p_pres) <= PRESERVED_TOL else "NO")
        for ok in (ok_l1, ok_p):
            if ok:
                total += 1
                hits += ok == "yes"
        print(f"{name:<42} {n:>3} {l1:>8.3f} {'' if p_l1 is None else f'{p_l1:.3f}':>6} "
              f"{ok_l1:>3}  {pres:>9.3f} {'' if p_pres is None else f'{p_pres:.2f}':>6} "
              f"{ok_p:>3}")
    print(f"within tolerance: {hits}/{total} (L1 +-{L1_TOL}, preserved +-{PRESERVED_TOL})")
    print(f"total run time {sum(m[3] for m in med.values()) / 60:.1f} min of CPU")

    def m(name):
        return med[name][0] if name in med else None

    checks = []
    canon = {op: m(f"canonical {op}-exponential") for op in ("conjunctive", "random", "variance")}
    if None not in canon.values():
        checks.append(("CONJUNCTIVE is the best operator in canonical training",
                       canon["conjunctive"] < min(canon["random"], canon["variance"])))
    lipi = {k: m(k) for k in ("lipi none", "lipi random-exponential", "lipi conjunctive-final_n",
                              "lipi variance-population")}
    if None not in lipi.values():
        checks.append(("RANDOM-exponential is the best in Lipi-AE-S",
                       lipi["lipi random-exponential"] == min(lipi.values())))
    if m("lipi none") is not None and m("canonical none") is not None:
        checks.append(("Lipi-AE-S beats canonical training", m("lipi none") < m("canonical none")))
    for op in ("conjunctive", "random", "variance"):
        late = [m(f"operator={op},schedule={s}") for s in LATE]
        early = [m(f"operator={op},schedule={s}") for s in EARLY]
        if None not in late + early:
            checks.append((f"late schedules beat early ones ({op})", max(late) < min(early)))
    for text, ok in checks:
        print(f"{'holds' if ok else 'FAILS':>5}  {text}")


if __name__ == "__main__":
    sys.exit(main())

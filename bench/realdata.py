"""Do the paper's findings hold on real data?  The paper's rows on digits and MNIST-1D.

Run from the repository root (needs the ``datasets`` extra: scikit-learn, mnist1d)::

    python -m bench.realdata --quick          # 100 epochs: about 10 minutes on 2 cores
    python -m bench.realdata                  # 400 epochs, as the paper
    python -m bench.realdata --report-only    # print the table of what has run

For each data set (``digits``, ``mnist1d`` and ``binary-clustering`` as the
reference) it runs ``configs/realdata/study.toml`` (the paper's canonical and
Lipi-AE-S rows, gecco25 profile, 5 seeds) with ``sparseae sweep`` into
``OUT/NAME-EEPOCHS.h5`` (rerunning resumes), then prints per row the medians of
the best test L1 (Lipi-AE-S: the best centre's; canonical: the model's) and of
its preserved fraction, and per finding of the paper whether it holds on each
data set, with two-sided Mann-Whitney U p-values (scipy) of the test L1s:

* CONJUNCTIVE is the best operator in canonical training (its median below
  RANDOM's and VARIANCE's; p against each);
* RANDOM-exponential is the best in Lipi-AE-S (its median the lowest of the four
  Lipi-AE-S rows; p against each other row);
* Lipi-AE-S beats canonical training (lipi none against canonical none, as
  ``bench.paper``; and the best Lipi-AE-S row against the best canonical row).

A finding "holds" when the medians are ordered as the paper says and every p is
below 0.05, "holds (n.s.)" when they are ordered so but some p is not, and
"FAILS" when they are not.  With 5 seeds the smallest two-sided p is 0.0079.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "configs", "realdata", "study.toml")
DATASETS = ("digits", "mnist1d", "binary-clustering")
CANONICAL = ("canonical none", "canonical conjunctive-exponential",
             "canonical random-exponential", "canonical variance-exponential")
LIPI = ("lipi none", "lipi random-exponential", "lipi conjunctive-final_n",
        "lipi variance-population")
ALPHA = 0.05


def machine() -> str:
    from bench._timing import cpu_model

    model = cpu_model()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{os.cpu_count()} cores, {model}, load average {load}"


def run_sweeps(datasets, epochs, seeds, workers, out, nice):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for name in datasets:
        cmd = [sys.executable, "-m", "sparseae", "sweep", SPEC, "--set", f"base.data={name}",
               "--set", f"base.epochs={epochs}", "--trials", str(seeds), "--workers",
               str(workers), "--out", results_path(out, name, epochs), "--quiet"]
        if nice:
            cmd = ["nice", "-n", str(nice)] + cmd
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env)
        if p.returncode != 0:
            sys.exit(f"bench.realdata: the sweep of {name} failed (exit {p.returncode})")
        print(f"# {name}: sweep {time.perf_counter() - t0:.0f} s wall", file=sys.stderr)


def results_path(out, name, epochs) -> str:
    return os.path.join(out, f"{name}-{epochs}epochs.h5")


def collect(out, datasets, epochs):
    from sparseae.report import load_results

    runs = {}
    for name in datasets:
        path = results_path(out, name, epochs)
        if not os.path.isfile(path):
            continue
        for r in load_results(path):
            runs.setdefault(name, {}).setdefault(r["variant"], []).append(r)
    return runs


def pvalue(a, b) -> float:
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def verdict(ordered: bool, ps) -> str:
    if not ordered:
        return "FAILS"
    return "holds" if all(p < ALPHA for p in ps) else "holds (n.s.)"


def findings(rows: dict) -> list:
    """``[(finding, verdict, detail)]`` for one data set's rows (variant -> test L1s)."""
    med = {k: statistics.median(v) for k, v in rows.items()}
    out = []

    def lowest(keys) -> str:
        k = min(keys, key=med.get)
        return f"; lowest median: {k} {med[k]:.4f}"

    ops = [f"canonical {op}-exponential" for op in ("conjunctive", "random", "variance")]
    if all(k in rows for k in ops):
        c, others = ops[0], ops[1:]
        ps = [pvalue(rows[c], rows[o]) for o in others]
        ok = all(med[c] < med[o] for o in others)
        out.append(("CONJUNCTIVE is the best operator in canonical training",
                    verdict(ok, ps),
                    ", ".join(f"vs {o.split()[1].split('-')[0]} p={p:.3g}"
                              for o, p in zip(others, ps)) + ("" if ok else lowest(ops))))
    if all(k in rows for k in LIPI):
        r, others = "lipi random-exponential", [k for k in LIPI if k != "lipi random-exponential"]
        ps = [pvalue(rows[r], rows[o]) for o in others]
        ok = all(med[r] < med[o] for o in others)
        out.append(("RANDOM-exponential is the best in Lipi-AE-S",
                    verdict(ok, ps),
                    ", ".join(f"vs {o.split(' ', 1)[1]} p={p:.3g}" for o, p in zip(others, ps))
                    + ("" if ok else lowest(LIPI))))
    if "lipi none" in rows and "canonical none" in rows:
        p = pvalue(rows["lipi none"], rows["canonical none"])
        out.append(("Lipi-AE-S beats canonical training (none vs none)",
                    verdict(med["lipi none"] < med["canonical none"], [p]), f"p={p:.3g}"))
    canon = [k for k in CANONICAL if k in rows]
    lipi = [k for k in LIPI if k in rows]
    if canon and lipi:
        bc = min(canon, key=med.get)
        bl = min(lipi, key=med.get)
        p = pvalue(rows[bl], rows[bc])
        out.append(("Lipi-AE-S beats canonical training (best row vs best row)",
                    verdict(med[bl] < med[bc], [p]), f"{bl} vs {bc}, p={p:.3g}"))
    return out


def report(runs, epochs) -> None:
    print(f"rows: medians over seeds of the best test L1 and its preserved fraction "
          f"(gecco25 profile, {epochs} epochs)")
    names = [n for n in DATASETS if n in runs] + sorted(set(runs) - set(DATASETS))
    print(f"{'row':<36}" + "".join(f" {n[:17]:>17}" for n in names))
    print(f"{'':<36}" + "".join(f" {'L1':>8} {'pres':>8}" for _ in names))
    cpu = 0.0
    for row in CANONICAL + LIPI:
        cells = []
        for n in names:
            rs = runs[n].get(row, [])
            cpu += sum(r["seconds"] for r in rs)
            if rs:
                l1 = statistics.median(r["summary"]["test_l1"] for r in rs)
                pres = statistics.median(r["summary"]["preserved"] for r in rs)
                cells.append(f" {l1:>8.4f} {pres:>8.3f}")
            else:
                cells.append(f" {'-':>8} {'-':>8}")
        print(f"{row:<36}" + "".join(cells))
    counts = sorted({len(rs) for n in names for rs in runs[n].values()})
    print(f"seeds per row: {', '.join(map(str, counts))}; run time {cpu / 60:.1f} min of CPU")
    print()
    for n in names:
        rows = {k: [r["summary"]["test_l1"] for r in v] for k, v in runs[n].items()}
        for text, ok, detail in findings(rows):
            print(f"{n:<18} {ok:<13} {text} ({detail})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 epochs instead of 400 (the paper's); about a quarter of the time")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (overrides --quick)")
    ap.add_argument("--seeds", type=int, default=5, help="trials per row (seeds 1..N)")
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help="comma-separated data set names (any --data value)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nice", type=int, default=0, help="run the sweeps under nice -n N")
    ap.add_argument("--out", default="realdata", help="folder of the results files")
    ap.add_argument("--report-only", action="store_true", help="print the table, run nothing")
    a = ap.parse_args(argv)
    epochs = a.epochs or (100 if a.quick else 400)
    datasets = [d for d in a.datasets.split(",") if d]
    print(f"# {machine()}", file=sys.stderr)
    t0 = time.perf_counter()
    if not a.report_only:
        os.makedirs(a.out, exist_ok=True)
        run_sweeps(datasets, epochs, a.seeds, a.workers, a.out, a.nice)
    runs = collect(a.out, datasets, epochs)
    if not runs:
        sys.exit(f"bench.realdata: no results in {a.out} for {epochs} epochs")
    report(runs, epochs)
    if not a.report_only:
        print(f"wall {time.perf_counter() - t0:.0f} s with {a.workers} workers; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

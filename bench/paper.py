"""Compare our gecco25 sweep results with the paper's table (ALGORITHM.md section 7).

Run the sweeps first (the trial count is yours; the paper used 30)::

    sparseae sweep configs/gecco25/canonical.toml --trials 10 --out canonical.h5
    sparseae sweep configs/gecco25/lipi.toml      --trials 10 --out lipi.h5
    sparseae sweep configs/gecco25/schedules.toml --trials 3  --out schedules.h5
    python -m bench.paper canonical.h5 lipi.h5 schedules.h5

For every row it prints our median of the figures' metric (``mean_l1``: mean
training-set L1 of the centres at the end) and of the preserved fraction (the
mean over the centres, the reference's zero-count accounting) next to the
paper's value, whether each is within tolerance (L1 0.03, preserved 0.07), and
then checks the paper's headline orderings.  Missing rows are skipped.
"""

import argparse
import statistics
import sys

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results files of sparseae sweep")
    a = ap.parse_args(argv)
    med = medians(collect(a.results))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Density-vs-L1 frontier per pruning operator: search, then the final compression phase.

Run from the repository root::

    python -m bench.frontier [--quick] [--profile default|gecco25] [--seeds 5]
                             [--plot frontier.png] [--json] [--workers 2]

For each seed: one Lipi-AE-S search (the gecco25 search settings: RANDOM with
the exponential schedule, fresh Adam, lr 1e-5, pruned weights regrow; on the
chosen profile's data), whose best centre (lowest validation L1) then goes through
the final compression phase (:func:`sparseae.compress.compress`: gradual
pruning to the density with the operator over the first half of the
fine-tuning epochs, then fine-tuning at the density with permanent masks;
``--allocation fanin`` by default, the best of the three measured on the
default data)
for every operator and density.  The no-pruning reference is the same centre
fine-tuned as long at density 1.  Prints the median (and IQR) of the final test
L1 over the seeds per operator and density, the compacted FLOPs, the best
operator per density with Mann-Whitney U p-values (two-sided) against each
other operator, the CPU, and wall and CPU time.  ``--plot`` (matplotlib) draws
L1 against density and against FLOPs with IQR bands.
"""

import argparse
import json
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bench._timing import cpu_model
from sparseae.density import ALLOCATIONS, DEFAULT_ALLOCATION

OPERATORS = ("random", "variance", "conjunctive", "magnitude")
DENSITIES = (0.8, 0.5, 0.3, 0.2, 0.1, 0.05)
#: (search epochs, fine-tuning epochs) of the full study and of --quick
FULL = (400, 150)
QUICK = (100, 60)

_DATA = {}


def _config(profile, seed, epochs):
    from sparseae import TrainConfig

    return TrainConfig.from_profile("gecco25", paradigm="lipi", operator="random",
                                    schedule="exponential", epochs=epochs, seed=seed,
                                    data_quirks=profile == "gecco25")


def _data(config):
    from sparseae.inputs import make_data

    key = config.to_json()
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = make_data(config)
    return _DATA[key]


def search(args):
    """One seed's search; returns the best centre's arrays and test L1."""
    profile, seed, epochs = args
    from sparseae.runs import make_run

    from sparseae.evaluation import best_cell, model_l1

    config = _config(profile, seed, epochs)
    data = _data(config)
    run = make_run(config, data)
    s = run.run()
    cell, _ = best_cell(run.encoders, run.decoders, run.arch, data.validation, run.backend)
    m = run.centre(cell)
    return seed, {"test_l1": model_l1(m, data.test, run.backend),
                  "enc": m.encoder.params[0].copy(),
                  "dec": m.decoder.params[0].copy(), "seconds": s["seconds"]}


def _centre_path(folder, profile, seed, epochs):
    return os.path.join(folder, f"{profile}-seed{seed}-{epochs}epochs.npz")


def load_centres(folder, profile, seeds, epochs) -> dict:
    """The search centres of ``seeds`` already in ``folder`` (``--centres``)."""
    out = {}
    for s in seeds if folder else ():
        path = _centre_path(folder, profile, s, epochs)
        if os.path.isfile(path):
            with np.load(path, allow_pickle=False) as z:
                out[s] = {k: z[k] for k in ("enc", "dec")}
                out[s].update({k: float(z[k]) for k in ("test_l1", "seconds")})
    return out


def save_centre(folder, profile, seed, epochs, centre) -> None:
    """Write one search centre into ``folder`` (atomically), when one is given."""
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = _centre_path(folder, profile, seed, epochs)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **centre)
    os.replace(tmp, path)


def final(args):
    """One final phase: (seed, operator, density) -> metrics."""
    profile, seed, epochs, finetune, operator, density, enc, dec, allocation, refit = args
    from sparseae.compress import compress
    from sparseae.model import Autoencoder

    config = _config(profile, seed, epochs)
    data = _data(config)
    m = Autoencoder("default")
    m.encoder.params[0] = enc
    m.decoder.params[0] = dec
    _, info = compress(m, data, density, "magnitude" if operator == "none" else operator,
                       finetune, seed=seed, allocation=allocation,
                       refit=refit and operator != "none")
    return seed, operator, density, info


def _q(values):
    v = np.asarray(values, np.float64)
    return float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75))


def summarise(results, densities):
    """Per (operator, density): median, IQR, values; best operator and p-values per density."""
    from scipy.stats import mannwhitneyu

    table = {}
    for seed, op, dens, info in results:
        table.setdefault((op, dens), []).append((seed, info))
    rows = {}
    for (op, dens), items in table.items():
        items.sort(key=lambda x: x[0])
        l1 = [i["test_l1"] for _, i in items]
        fl = [i["flops"] for _, i in items]
        med, q1, q3 = _q(l1)
        rows[f"{op}@{dens:g}"] = {"operator": op, "density": dens, "median": med, "q1": q1,
                                  "q3": q3, "values": l1, "flops_median": float(np.median(fl)),
                                  "preserved": float(np.median([i["preserved"] for _, i in items])),
                                  # final phases whose refitted output layer was kept (--refit)
                                  "refit_kept": sum(bool(i.get("refit")) for _, i in items)}
    winners = {}
    for dens in densities:
        here = {op: rows[f"{op}@{dens:g}"] for op in OPERATORS if f"{op}@{dens:g}" in rows}
        if not here:
            continue
        best = min(here, key=lambda op: here[op]["median"])
        pvals = {}
        for op, r in here.items():
            if op != best:
                pvals[op] = float(mannwhitneyu(here[best]["values"], r["values"],
                                               alternative="two-sided").pvalue)
        winners[f"{dens:g}"] = {"best": best, "median": here[best]["median"], "p": pvals}
    return rows, winners


def print_table(rows, winners, densities, base, header):
    print(header)
    print(f"search best centres (before the final phase): median test L1 "
          f"{np.median(base):.4f} [{np.percentile(base, 25):.4f}-{np.percentile(base, 75):.4f}]")
    ref = rows.get("none@1")
    if ref:
        print(f"no pruning (density 1, fine-tuned as long): median test L1 {ref['median']:.4f} "
              f"[{ref['q1']:.4f}-{ref['q3']:.4f}], FLOPs {ref['flops_median']:.0f}")
    print("median best test L1 [IQR] over the seeds, per density")
    print(f"{'operator':<12}" + "".join(f"{d:>22g}" for d in densities))
    for op in OPERATORS:
        cells = []
        for d in densities:
            r = rows.get(f"{op}@{d:g}")
            cells.append(f"{r['median']:.4f} [{r['q1']:.3f}-{r['q3']:.3f}]" if r else "-")
        print(f"{op:<12}" + "".join(f"{c:>22}" for c in cells))
    print(f"{'FLOPs':<12}" + "".join(
        f"{rows[f'magnitude@{d:g}']['flops_median']:>22.0f}" if f"magnitude@{d:g}" in rows
        else f"{'-':>22}" for d in densities) + "   (per sample, live weights; magnitude's median)")
    kept = {d: sum(rows[f"{op}@{d:g}"]["refit_kept"] for op in OPERATORS
                   if f"{op}@{d:g}" in rows) for d in densities}
    if any(kept.values()):
        print("refitted output layer kept in " + ", ".join(
            f"{n} final phases at {d:g}" for d, n in kept.items()))
    print("winner per density (lowest median) and Mann-Whitney U p-values (two-sided) "
          "against the others")
    for d in densities:
        w = winners.get(f"{d:g}")
        if w:
            ps = ", ".join(f"{op} {p:.3f}" for op, p in w["p"].items())
            print(f"  {d:<5g} {w['best']:<12} {w['median']:.4f}   p: {ps}")


def plot(rows, densities, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ref = rows.get("none@1")
    # markers and dashes tell apart lines that coincide (RANDOM and VARIANCE under fanin)
    styles = dict(zip(OPERATORS, (("o", "-"), ("s", "--"), ("^", "-"), ("D", "--"))))
    for op in OPERATORS:
        rs = [rows[f"{op}@{d:g}"] for d in densities if f"{op}@{d:g}" in rows]
        if not rs:
            continue
        marker, ls = styles[op]
        for ax, key in zip(axes, ("density", "flops_median")):
            x = [r[key] for r in rs]
            ax.plot(x, [r["median"] for r in rs], marker=marker, ls=ls, label=op)
            ax.fill_between(x, [r["q1"] for r in rs], [r["q3"] for r in rs], alpha=0.2)
    for ax, key, label in zip(axes, ("density", "flops_median"),
                              ("density (live fraction of the parameters)",
                               "FLOPs per sample (live weights)")):
        if ref:
            ax.axhline(ref["median"], color="k", ls="--", lw=1, label="no pruning")
            ax.axhspan(ref["q1"], ref["q3"], color="k", alpha=0.08)
        ax.axhline(0.05, color="grey", ls=":", lw=1, label="noise floor")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("median best test L1 (IQR band)")
        ax.grid(alpha=0.3)
    axes[0].set_xticks(sorted(densities))  # the studied densities, not 10^k labels
    axes[0].set_xticklabels([f"{d:g}" for d in sorted(densities)])
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK[0]} search epochs and {QUICK[1]} fine-tuning epochs "
                         f"(default {FULL[0]} and {FULL[1]})")
    ap.add_argument("--profile", choices=("default", "gecco25"), default="default",
                    help="whose data: default (binary clustering) or gecco25 (its quirks)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="search epochs")
    ap.add_argument("--finetune-epochs", type=int, default=None)
    ap.add_argument("--densities", default=",".join(f"{d:g}" for d in DENSITIES))
    ap.add_argument("--allocation", choices=ALLOCATIONS, default=DEFAULT_ALLOCATION,
                    help="how the final phase shares the live entries among the tensors "
                         "(fanin: measured best on the default data)")
    ap.add_argument("--refit", action="store_true",
                    help="the final phase refits the output layer's inputs where it keeps at "
                         "most two per unit, then fine-tunes as long again (compress --refit)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--centres", default=None, metavar="DIR",
                    help="keep each seed's search centre in DIR and reuse it when there "
                         "(another --allocation or --densities then costs no search)")
    ap.add_argument("--plot", default=None, help="write the figure here (PNG)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    a = ap.parse_args(argv)
    epochs = a.epochs or (QUICK if a.quick else FULL)[0]
    finetune = a.finetune_epochs or (QUICK if a.quick else FULL)[1]
    densities = [float(x) for x in a.densities.split(",")]
    seeds = list(range(1, a.seeds + 1))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        bases = load_centres(a.centres, a.profile, seeds, epochs)
        todo = [(a.profile, s, epochs) for s in seeds if s not in bases]
        for seed, centre in pool.map(search, todo):
            bases[seed] = centre
            save_centre(a.centres, a.profile, seed, epochs, centre)
        t_search = time.perf_counter() - t0
        jobs = [(a.profile, s, epochs, finetune, op, d, bases[s]["enc"], bases[s]["dec"],
                 a.allocation, a.refit) for s in seeds for op in OPERATORS for d in densities]
        jobs += [(a.profile, s, epochs, finetune, "none", 1.0, bases[s]["enc"], bases[s]["dec"],
                  a.allocation, a.refit) for s in seeds]
        results = list(pool.map(final, jobs, chunksize=4))
    wall = time.perf_counter() - t0
    ru_self, ru_kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))
    cpu = ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime
    rows, winners = summarise(results, densities)
    base = [bases[s]["test_l1"] for s in seeds]
    header = (f"frontier: {a.profile} data, {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), "
              f"Lipi-AE-S search {epochs} epochs (gecco25 settings, RANDOM exponential), "
              f"final phase {finetune} epochs ({a.allocation} allocation"
              f"{'; output layer refitted where <= 2 inputs per unit' if a.refit else ''})\n"
              f"CPU {cpu_model()}, {os.cpu_count()} cores, {a.workers} workers: "
              f"wall {wall:.0f} s (search {t_search:.0f} s), CPU {cpu:.0f} s")
    print_table(rows, winners, densities, base, header)
    if a.plot:
        plot(rows, densities, a.plot, f"{a.profile} data, {len(seeds)} seeds, search {epochs} "
             f"epochs, final phase {finetune} epochs"
             + (" (output layer refitted at <= 2 inputs per unit)" if a.refit else ""))
        print(f"plot: {a.plot}")
    if a.json:
        print(json.dumps({"profile": a.profile, "refit": a.refit, "seeds": seeds,
                          "search_epochs": epochs,
                          "finetune_epochs": finetune, "search_test_l1": base,
                          "rows": rows, "winners": winners, "cpu": cpu_model(),
                          "wall_seconds": wall, "cpu_seconds": cpu}, sort_keys=True))


if __name__ == "__main__":
    main()

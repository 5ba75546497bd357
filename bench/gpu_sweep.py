"""Lockstep sweeps on a GPU: the gecco25 Lipi-AE-S sweep and the paper's table.

Run on the GPU machine from the repository root (see ``bench/gpu.py`` for the
numpy wheel that numba-cuda needs there)::

    PYTHONPATH=/tmp/site:. python3 -m bench.gpu_sweep [--trials 30] [--epochs 5]
                                                      [--table-epochs 5]

1. ``configs/gecco25/lipi.toml`` with ``--trials`` trials of ``--epochs``
   epochs: ``sparseae sweep --device cuda`` (lockstep, with and without the
   overlap of training and host work) against the same sweep on the CPU in
   worker processes (one per core), wall times and their ratio,
   and the per-variant medians of the figures' metric on both devices (the
   runs agree per kernel call to float32 rounding, so they are compared as
   distributions).
2. The paper's whole table (``configs/gecco25/{canonical,lipi,schedules}.toml``,
   ``--trials`` trials) on cuda with ``--table-epochs`` and twice as many
   epochs instead of 400: time to build the runs, the lockstep loop (split
   into training calls, the batched evaluations -- every run's all-pairs,
   replacement, population statistics and figure metric of a step in one
   launch each -- and the runs' host work) and the summaries; the two
   loops' difference gives the cost per epoch, scaled to 400 epochs -- the
   estimate of the full table's time on this GPU.

Writes every number to ``$OUT/gpu_sweep.json`` when ``OUT`` is set.
``--tiny`` shrinks everything (data, architecture, trials) for a smoke test,
also under ``NUMBA_ENABLE_CUDASIM=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPECS = ("canonical", "lipi", "schedules")
TINY = {"dim": 12, "clusters": 2, "per_cluster": 6, "arch": "12,5,2", "population": 3}


def log(*a):
    print(*a, flush=True)


def spec_for(name, overrides):
    from sparseae.sweep import load_spec

    return load_spec(REPO / "configs" / "gecco25" / f"{name}.toml", overrides)


def medians(path):
    from sparseae.report import load_results

    by = {}
    for r in load_results(path):
        by.setdefault(r["variant"], []).append(r["summary"]["mean_l1"])
    return {k: statistics.median(v) for k, v in by.items()}


def lipi_sweep(trials, epochs, extra, tmp):
    """The gecco25 Lipi-AE-S sweep on cuda (lockstep, with and without overlap)
    and on the CPU in worker processes."""
    from sparseae.sweep import run_sweep

    out = {}
    for mode, device, overlap in (("cuda", "cuda", True), ("cuda-no-overlap", "cuda", False),
                                  ("cpu", "cpu", None)):
        spec = spec_for("lipi", dict(extra, epochs=epochs, device=device))
        path = Path(tmp) / f"lipi-{mode}.h5"
        t0 = time.perf_counter()
        try:
            stats = run_sweep(spec, path, trials=trials, lockstep=device == "cuda",
                              lockstep_overlap=overlap)
        except Exception as exc:  # report, go on with the other modes
            out[mode] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"lipi sweep on {mode}: ERROR {out[mode]['error']}")
            continue
        out[mode] = {"wall_s": time.perf_counter() - t0, "runs": stats["done"],
                     "workers": stats["workers"], "medians": medians(path),
                     "lockstep_timing": stats.get("lockstep_timing")}
        log(f"lipi sweep {trials} trials x {epochs} epochs on {mode}: "
            f"{out[mode]['wall_s']:.1f} s ({stats['done']} runs; "
            f"{json.dumps(stats.get('lockstep_timing'))})")
    if "wall_s" in out["cpu"] and "wall_s" in out["cuda"]:
        out["cpu_over_cuda"] = out["cpu"]["wall_s"] / out["cuda"]["wall_s"]
    return out


def table_run(trials, epochs, extra):
    """Every run of the paper's table with ``epochs`` epochs in one lockstep
    session, phase by phase: build, loop (training calls and host work),
    summaries."""
    from sparseae.lockstep import run_lockstep
    from sparseae.runs import make_run

    t0 = time.perf_counter()
    configs = []
    for name in SPECS:
        spec = spec_for(name, dict(extra, epochs=epochs, device="cuda"))
        configs += [v.trial_config(t) for v, t in spec.runs(trials)]
    runs = [make_run(c) for c in configs]
    t_build = time.perf_counter() - t0
    timing = {}
    t1 = time.perf_counter()
    finish = [0.0]

    def on_finish(run):
        t = time.perf_counter()
        run.summary()
        finish[0] += time.perf_counter() - t

    run_lockstep(runs, on_finish, timing=timing)
    res = {"runs": len(runs), "epochs": epochs, "build_s": t_build,
           "loop_s": time.perf_counter() - t1 - finish[0], "summaries_s": finish[0],
           "timing": timing}
    log(f"paper table, {len(runs)} runs x {epochs} epochs on cuda: build {t_build:.1f} s, "
        f"loop {res['loop_s']:.1f} s (training calls {timing['train_seconds']:.1f} s, batched "
        f"evaluations on the GPU {timing.get('eval_seconds', 0.0):.1f} s, host "
        f"{timing['host_seconds']:.1f} s, {timing['train_calls']} calls in "
        f"{timing['groups']} groups), summaries {finish[0]:.1f} s")
    return res


def paper_table(trials, epochs, extra, full_epochs=400):
    """The table at ``epochs`` and ``2 * epochs`` epochs; the difference gives the
    cost of an epoch, the rest the fixed cost (start-up and the two epochs that
    record the figures' metric, 0 and the last; a 400-epoch run has five)."""
    a = table_run(trials, epochs, extra)
    b = table_run(trials, 2 * epochs, extra)
    per_epoch = (b["loop_s"] - a["loop_s"]) / epochs
    fixed = max(0.0, a["loop_s"] - per_epoch * epochs)
    est = b["build_s"] + fixed * 5 / 2 + per_epoch * full_epochs + b["summaries_s"]
    log(f"  loop: {per_epoch:.2f} s per epoch + {fixed:.1f} s fixed; estimate for "
        f"{full_epochs} epochs: {est / 60:.1f} min")
    return {"runs": [a, b], "loop_s_per_epoch": per_epoch, "loop_fixed_s": fixed,
            "estimate_full_table_s": est, "scaled_to_epochs": full_epochs}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m bench.gpu_sweep",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the Lipi-AE-S sweep")
    ap.add_argument("--table-epochs", type=int, default=5,
                    help="the paper's table is timed at this and twice this many epochs "
                         "(below 50) and scaled to 400")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="smoke test sizes")
    a = ap.parse_args(argv)
    from sparseae.kernels import cuda as ck

    ok, why = ck.available()
    log(why)
    if not ok:
        return 2
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":  # smoke test under the simulator
        sys.setswitchinterval(1e-4)
        ck.TPB_TRAIN = ck.TPB_EVAL = 64
    extra = dict(TINY) if a.tiny else {}
    results = {"args": vars(a)}
    with tempfile.TemporaryDirectory() as tmp:
        results["lipi_sweep"] = lipi_sweep(a.trials, a.epochs, extra, tmp)
    if not a.skip_table:
        results["paper_table"] = paper_table(a.trials, a.table_epochs, extra)
    text = json.dumps(results, indent=1, default=str)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_sweep.json").write_text(text)
    ls = results["lipi_sweep"]
    log("")
    if "medians" in ls["cuda"] and "medians" in ls["cpu"]:
        log(f"{'variant':<34} {'cuda':>8} {'cpu':>8}  (median mean_l1)")
        for k, v in ls["cuda"]["medians"].items():
            log(f"{k:<34} {v:8.4f} {ls['cpu']['medians'].get(k, float('nan')):8.4f}")
    log("lipi sweep wall: " + ", ".join(
        f"{m} {r['wall_s']:.1f} s" if "wall_s" in r else f"{m} ERROR"
        for m, r in ls.items() if isinstance(r, dict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweeps on Dask against the local pool: overhead per run and how busy the workers stay.

    python -m bench.cluster [--runs 200] [--repeats 3] [--lipi-trials 10] [--lipi-epochs 20]

* overhead: ``--runs`` tiny runs (canonical, one epoch, 20-6-3 on 15 training rows;
  a few ms each) as one sweep in the local pool (``--workers 2``) and on a
  LocalCluster of 2 worker processes (started once beforehand; its start time is
  printed apart), ``--repeats`` times alternately, fresh results files each time.
  Reported: the median wall of each (``run_sweep``'s wall, which includes the pool's
  start but not the cluster's) and their ratio, and per run the time a worker
  slot spent on anything but runs: ``(wall x 2 - sum of run seconds) / runs``
  (scheduling, result transfer, the client's writes).
* efficiency: the gecco25 Lipi-AE-S sweep of two rows ("lipi none", "lipi
  random-exponential") x ``--lipi-trials`` trials at ``--lipi-epochs`` epochs, on
  the same LocalCluster and in the local pool: ``wall / (sum of run seconds / 2)``
  (1.0 = both cores busy all the time).

The machine's load average before and after and each sweep's CPU seconds (Dask)
are printed beside the wall times: on a shared machine a wall time also counts
time other processes held the cores.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

TINY = {"base": {"paradigm": "canonical", "arch": "20,6,3", "clusters": 3, "dim": 20,
                 "per_cluster": 5, "batch_size": 5, "epochs": 1}}
LIPI = {"base": {"profile": "gecco25", "paradigm": "lipi"},
        "variant": [{"name": "lipi none", "operator": "none"},
                    {"name": "lipi random-exponential", "operator": "random",
                     "schedule": "exponential"}]}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lipi-trials", type=int, default=10)
    ap.add_argument("--lipi-epochs", type=int, default=20)
    ap.add_argument("--skip-lipi", action="store_true")
    a = ap.parse_args(argv)

    from sparseae.sweep import cluster as dc
    from sparseae.sweep import run_sweep

    report = {"load_before": load()}
    print(f"load average before: {report['load_before']}", flush=True)
    folder = tempfile.mkdtemp(prefix="bench-cluster-")
    t0 = time.perf_counter()
    with dc.connect("local:2", {}, a.runs) as (client, text):
        report["cluster_start_seconds"] = time.perf_counter() - t0
        print(f"{text}: started in {report['cluster_start_seconds']:.2f} s", flush=True)
        tiny = dict(TINY, trials=a.runs)
        # warm both: the kernels compiled or loaded in every worker
        run_sweep(dict(tiny, trials=4), os.path.join(folder, "warm-pool.h5"), workers=2)
        run_sweep(dict(tiny, trials=4), os.path.join(folder, "warm-dask.h5"), client=client)
        rows = {"pool": [], "dask": []}
        for i in range(a.repeats):
            for kind in ("pool", "dask"):
                out = os.path.join(folder, f"tiny-{kind}-{i}.h5")
                kw = {"workers": 2} if kind == "pool" else {"client": client}
                st = run_sweep(tiny, out, **kw)
                assert st["done"] == a.runs, st
                slack = (st["wall_seconds"] * 2 - st["run_seconds"]) / a.runs
                rows[kind].append({"wall": st["wall_seconds"], "run": st["run_seconds"],
                                   "slack_ms": slack * 1e3, "cpu": st.get("cpu_seconds")})
                print(f"  {kind:4} {a.runs} tiny runs: wall {st['wall_seconds']:.3f} s, run "
                      f"seconds {st['run_seconds']:.3f}, non-run time per run and slot "
                      f"{slack * 1e3:.2f} ms", flush=True)
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "run", "slack_ms")}
               for k, v in rows.items()}
        report["tiny"] = {"runs": a.runs, "median": med,
                          "ratio": med["dask"]["wall"] / med["pool"]["wall"]}
        print(f"tiny: median wall pool {med['pool']['wall']:.3f} s, dask "
              f"{med['dask']['wall']:.3f} s, ratio {report['tiny']['ratio']:.2f}; non-run time "
              f"per run: pool {med['pool']['slack_ms']:.2f} ms, dask "
              f"{med['dask']['slack_ms']:.2f} ms", flush=True)
        if not a.skip_lipi:
            lipi = dict(LIPI, trials=a.lipi_trials)
            lipi["base"] = dict(lipi["base"], epochs=a.lipi_epochs)
            report["lipi"] = {}
            for kind in ("dask", "pool"):
                kw = {"workers": 2} if kind == "pool" else {"client": client}
                st = run_sweep(lipi, os.path.join(folder, f"lipi-{kind}.h5"), **kw)
                ratio = st["wall_seconds"] / (st["run_seconds"] / 2)
                report["lipi"][kind] = {"runs": st["done"], "wall": st["wall_seconds"],
                                        "run_seconds": st["run_seconds"],
                                        "cpu_seconds": st.get("cpu_seconds"),
                                        "wall_over_half_sum": ratio}
                cpu = (f", CPU {st['cpu_seconds']:.1f} s" if "cpu_seconds" in st else "")
                print(f"lipi {kind}: {st['done']} runs, wall {st['wall_seconds']:.1f} s, sum of "
                      f"run seconds {st['run_seconds']:.1f}{cpu}, wall / (sum / 2) "
                      f"{ratio:.3f}", flush=True)
    report["load_after"] = load()
    print(f"load average after: {report['load_after']}")
    print(json.dumps(report, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

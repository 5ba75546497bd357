"""``sparseae sweep``: run a sweep spec (variants x trials) into one results file."""

import json
import os
import signal
import sys
import threading

import click

from sparseae.cli.common import FilePath, InputError, eprint, print_summary, warnings_as_lines
from sparseae.cli.progress import Progress
from sparseae.errors import SparseaeError


@click.command()
@click.argument("spec_path", metavar="SWEEP.toml", type=FilePath())
@click.option("--set", "sets", metavar="KEY=VALUE", multiple=True,
              help="Override an entry of the spec (repeatable), e.g. --set base.epochs=5 "
                   "--set trials=3 --set grid.operator=[random,none]; VALUE is a TOML value "
                   "or a bare string.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Trials per variant (trial t uses seed + t). [default: the spec's trials]")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes; 1 runs in this process. [default: CPU count]")
@click.option("--out", type=FilePath(), default=None,
              help="Results file (HDF5). [default: SWEEP.h5 next to SWEEP.toml]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Run every run's kernels on this device (sets the base config's device).")
@click.option("--lockstep/--no-lockstep", default=None,
              help="Train all runs in this process in batched groups, one training call per "
                   "step for every run of a group (same results). [default: on with --device "
                   "cuda]")
@click.option("--lockstep-runs", type=click.IntRange(min=1), default=1024, show_default=True,
              help="With --lockstep: runs in flight (and in memory, about 25 MB each at the "
                   "default sizes) at a time.")
@click.option("--cluster", "cluster", metavar="TARGET", default=None,
              help="Run on Dask (pip install 'sparseae[distributed]'): local:N (N worker "
                   "processes here), tcp://HOST:PORT (an existing scheduler), slurm or pbs "
                   "(jobs through dask-jobqueue, settings from the spec's [cluster] table).")
@click.option("--cluster-config", type=FilePath(exists=True), default=None,
              help="A TOML file with [cluster] settings (they override the spec's table).")
@click.option("--dry-run", is_flag=True,
              help="List the runs (variant, trial, seed, done or to run) and exit; nothing is "
                   "run or written.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress (default: a bar on a terminal, else a line every 30 s and at "
                   "every quarter of the sweep).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
def sweep(spec_path, sets, trials, workers, out, device, lockstep, lockstep_runs, cluster,
          cluster_config, dry_run, quiet, as_json):
    """Run every variant x trial of SWEEP.toml as independent runs in worker processes.

    The spec's [base] table sets TrainConfig fields (and profile), [grid] maps
    fields to lists of values (their cartesian product gives the variants),
    [[variant]] tables add explicit variants; `trials` and `seed` set the
    trials (trial t uses seed + t).  Relative `data` paths in the spec are
    relative to the spec's folder.  Finished runs are written to one HDF5 file
    atomically as they complete; rerunning resumes, skipping finished runs.
    Ctrl-C starts no new run and lets runs in flight finish (a second Ctrl-C
    abandons them); SIGTERM abandons them at once; both keep the finished runs
    and exit with 130.  A second sweep writing the same file exits with 2.
    With --lockstep the runs of a wave (--lockstep-runs) are in flight together.
    With --cluster each run is a task on a Dask cluster: a run whose worker dies
    is run again elsewhere, a run that raises is recorded as failed and the
    sweep goes on (exit 2 at the end, naming the failures).
    """
    from sparseae.sweep import load_spec, plan, run_sweep

    if out is None:
        out = os.path.splitext(spec_path)[0] + ".h5"
    with warnings_as_lines():
        try:
            spec = load_spec(spec_path, {"device": device} if device else None, sets)
            table = _cluster_settings(spec, cluster, cluster_config, workers, lockstep, device)
            if dry_run:
                _dry_run(plan(spec, out, trials), spec, out, as_json)
                if cluster in ("slurm", "pbs") and not as_json:
                    from sparseae.sweep.cluster_settings import job_script

                    click.echo(f"job script ({cluster}, one per job):")
                    click.echo(job_script(cluster, table))
                return
            if device == "cuda":
                from sparseae.backend import kernels

                kernels("cuda")
        except SparseaeError as exc:
            raise InputError(str(exc)) from None
        stats = _run(spec, out, trials, workers, lockstep, lockstep_runs, quiet or as_json,
                     run_sweep, cluster, table)
    if as_json:
        print_summary(stats, True)
    else:
        click.echo(f"sweep: {stats['done']} runs done, {stats['skipped']} skipped "
                   f"({stats['runs']} in the sweep"
                   + (f", {stats['abandoned']} abandoned" if stats["abandoned"] else "")
                   + f") -> {stats['out']}")
        lt = stats.get("lockstep_timing")
        if "cluster" in stats and not stats["workers"]:
            click.echo("  nothing to run: no cluster started")
        elif "cluster" in stats:
            n = stats["workers"]
            click.echo(f"  wall {stats['wall_seconds']:.2f} s on {n} Dask worker"
                       f"{'s' if n != 1 else ''} (cluster start {stats['startup_seconds']:.1f} "
                       f"s), runs {stats['run_seconds']:.2f} s (CPU {stats['cpu_seconds']:.2f} "
                       f"s), efficiency {stats['efficiency']:.2f} (run seconds / (wall x "
                       f"workers)), {stats['retried']} retried, {len(stats['failed'])} failed")
        elif lt is not None:
            click.echo(f"  wall {stats['wall_seconds']:.2f} s in lockstep: {lt['groups']} "
                       f"group{'s' if lt['groups'] != 1 else ''}, {lt['train_calls']} training "
                       f"calls taking {lt['train_seconds']:.2f} s, batched evaluations "
                       f"{lt.get('eval_seconds', 0.0):.2f} s, the runs' host work "
                       f"{lt['host_seconds']:.2f} s")
        else:
            n = stats["workers"]
            click.echo(f"  wall {stats['wall_seconds']:.2f} s, sum of run seconds "
                       f"{stats['run_seconds']:.2f} s, parallel ratio (sum / wall) "
                       f"{stats['ratio']:.2f} ({n} worker{'s' if n != 1 else ''})")
    if stats["interrupted"]:
        eprint(f"interrupted: rerun the same command to resume ({out})")
        sys.exit(130)


def _cluster_settings(spec, cluster, cluster_config, workers, lockstep, device) -> dict | None:
    """The [cluster] settings for --cluster (None without it); refuse flags that clash."""
    if cluster is None:
        if cluster_config is not None:
            raise InputError("--cluster-config: give --cluster too (local:N, tcp://HOST:PORT, "
                             "slurm or pbs)")
        return None
    from sparseae.sweep.cluster_settings import check_table, load_cluster_config, parse_target

    parse_target(cluster)
    if workers is not None:
        raise InputError("--workers: not with --cluster (use --cluster local:N)")
    if lockstep:
        raise InputError("--lockstep: not with --cluster (lockstep sweeps run on one machine)")
    if device == "cuda" or any(v.config.device == "cuda" for v in spec.variants):
        raise InputError("--device cuda: not with --cluster (Dask sweeps run on the CPU; "
                         "use --lockstep on one GPU machine)")
    table = dict(spec.cluster)
    if cluster_config is not None:
        table.update(load_cluster_config(cluster_config))
        table = check_table(table, f"[cluster] with {cluster_config}")
    return table


def _run(spec, out, trials, workers, lockstep, lockstep_runs, quiet, run_sweep, cluster=None,
         table=None):
    stop, abort = threading.Event(), threading.Event()

    def on_sigint(*_):
        if stop.is_set():
            abort.set()
            eprint("\nabandoning the runs in flight")
        else:
            stop.set()
            eprint("\ninterrupted: finishing the runs in flight (Ctrl-C again to abandon them)")

    def on_sigterm(*_):
        stop.set()
        abort.set()
        eprint("terminated: abandoning the runs in flight, keeping the finished ones")

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
                signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
    bar = None
    best = {}
    in_flight, failed = set(), []

    def on_event(kind, info):
        if kind == "cluster" and not quiet:
            eprint(f"cluster: {info['cluster']}, {info['workers']} workers now"
                   + (f", dashboard {info['dashboard']}" if info["dashboard"] else ""))
        elif kind == "started":
            in_flight.add((info["variant"], info["trial"]))
        elif kind == "failed":
            failed.append(info)
            in_flight.discard((info["variant"], info["trial"]))
            eprint(f"run {info['variant']!r} trial {info['trial']} failed: {info['error']}")
        elif kind == "retried" and not quiet:
            eprint(f"run {info['variant']!r} trial {info['trial']} started again on "
                   f"{info['worker']} (its worker died)")

    def on_run(variant, trial, summary):
        in_flight.discard((variant, trial))
        l1 = summary.get("test_l1")
        if isinstance(l1, (int, float)) and ("l1" not in best or l1 < best["l1"]):
            best.update(l1=l1, preserved=summary.get("preserved", float("nan")),
                        run=f"{variant} trial {trial}")

    def on_progress(done, total, eta):
        nonlocal bar
        if done == 0:
            bar = Progress(total, "runs", quiet or not total)
            return
        text = (f"best test_l1 so far {best['l1']:.4f} ({best['run']}), "
                f"preserved {best['preserved']:.3f}" if best else "")
        if cluster is not None:
            text = f"running {len(in_flight)}, failed {len(failed)}  {text}"
        bar.update(done, text.rstrip())

    try:
        if cluster is not None:
            return run_sweep(spec, out, trials=trials, progress=on_progress, stop=stop,
                             abort=abort, lockstep=lockstep, on_run=on_run, cluster=cluster,
                             cluster_config=table, on_event=on_event)
        return run_sweep(spec, out, workers=workers, trials=trials, progress=on_progress,
                         stop=stop, abort=abort, lockstep=lockstep, lockstep_runs=lockstep_runs,
                         on_run=on_run)
    except SparseaeError as exc:
        raise InputError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _dry_run(runs, spec, out, as_json):
    todo = sum(not r["done"] for r in runs)
    if as_json:
        click.echo(json.dumps({"out": out, "runs": runs, "to_run": todo}))
        return
    width = max([len("variant")] + [len(r["variant"]) for r in runs])
    click.echo(f"{'variant':<{width}}  trial  seed  status")
    for r in runs:
        status = "done" if r["done"] else "to run"
        click.echo(f"{r['variant']:<{width}}  {r['trial']:>5}  {r['seed']:>4}  {status}")
    click.echo(f"{len(runs)} runs ({len(spec.variants)} variants), {todo} to run -> {out}")

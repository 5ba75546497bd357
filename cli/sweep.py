"""``sparseae sweep``: run a sweep spec (variants x trials) into one results file."""

import contextlib
import os
import signal
import sys
import threading

import click

from sparseae.cli.common import InputError, print_summary, progress
from sparseae.errors import SparseaeError


@click.command()
@click.argument("spec_path", metavar="SWEEP.toml", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Trials per variant (trial t uses seed + t). [default: the spec's trials]")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes; 1 runs in this process. [default: CPU count]")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
def sweep(spec_path, trials, workers, out, device, lockstep, lockstep_runs, quiet, as_json):
    """Run every variant x trial of SWEEP.toml as independent runs in worker processes.

    The spec's [base] table sets TrainConfig fields (and profile), [grid] maps
    fields to lists of values (their cartesian product gives the variants),
    [[variant]] tables add explicit variants; `trials` and `seed` set the
    trials (trial t uses seed + t).  Finished runs are written to one HDF5
    file atomically as they complete; rerunning resumes, skipping finished
    runs.  Ctrl-C starts no new run and lets runs in flight finish (a second
    Ctrl-C abandons them), keeps the file valid and exits with 130.  With
    --lockstep the runs of a wave (--lockstep-runs) are in flight together.
    """
    from sparseae.sweep import load_spec, run_sweep

    if out is None:
        out = os.path.splitext(spec_path)[0] + ".h5"
    try:
        spec = load_spec(spec_path, {"device": device} if device else None)
        if device == "cuda":
            from sparseae.backend import kernels

            kernels("cuda")
    except SparseaeError as exc:
        raise InputError(str(exc)) from None

    stop, abort = threading.Event(), threading.Event()

    def on_sigint(*_):
        if stop.is_set():
            abort.set()
            click.echo("\nabandoning the runs in flight", err=True)
        else:
            stop.set()
            click.echo("\ninterrupted: finishing the runs in flight (Ctrl-C again to abandon "
                       "them)", err=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    with contextlib.ExitStack() as stack:
        bar = None

        def on_progress(done, total, eta):
            nonlocal bar
            if done == 0:
                if total:
                    bar = stack.enter_context(progress(total, "sweep", quiet or as_json))
            elif bar is not None:
                bar.update(1)

        try:
            stats = run_sweep(spec, out, workers=workers, trials=trials, progress=on_progress,
                              stop=stop, abort=abort, lockstep=lockstep,
                              lockstep_runs=lockstep_runs)
        except SparseaeError as exc:
            raise InputError(str(exc)) from None
        finally:
            signal.signal(signal.SIGINT, previous)
    if as_json:
        print_summary(stats, True)
    else:
        click.echo(f"sweep: {stats['done']} runs done, {stats['skipped']} skipped "
                   f"({stats['runs']} in the sweep"
                   + (f", {stats['abandoned']} abandoned" if stats["abandoned"] else "")
                   + f") -> {stats['out']}")
        lt = stats.get("lockstep_timing")
        if lt is not None:
            click.echo(f"  wall {stats['wall_seconds']:.2f} s in lockstep: {lt['groups']} "
                       f"group{'s' if lt['groups'] != 1 else ''}, {lt['train_calls']} training "
                       f"calls taking {lt['train_seconds']:.2f} s, the runs' host work "
                       f"{lt['host_seconds']:.2f} s")
        else:
            n = stats["workers"]
            click.echo(f"  wall {stats['wall_seconds']:.2f} s, sum of run seconds "
                       f"{stats['run_seconds']:.2f} s, ratio {stats['ratio']:.2f} "
                       f"({n} worker{'s' if n != 1 else ''})")
    if stats["interrupted"]:
        click.echo(f"interrupted: rerun the same command to resume ({out})", err=True)
        sys.exit(130)

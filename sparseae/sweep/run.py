"""Run a sweep: every (variant, trial) not yet in the results file, on an executor.

:func:`run_sweep` plans the runs (:mod:`sparseae.sweep.results` skips finished
ones), picks an executor (:mod:`sparseae.sweep.executors`: this process,
local worker processes, or lockstep groups -- the default on cuda), and is
the only writer of the results file while they run.
"""

from __future__ import annotations

import json
import os
import threading
import time

from sparseae import _lock
from sparseae.errors import ConfigError, ResultsError
from sparseae.sweep import executors as ex
from sparseae.sweep.results import Writer, _now, existing_runs, same_config
from sparseae.sweep.spec import SweepSpec, check_runs, check_size, load_spec, parse_spec


def run_sweep(spec, out_path, workers: int | None = None, trials: int | None = None,
              progress=None, stop=None, abort=None, lockstep: bool | None = None,
              lockstep_runs: int = 1024, lockstep_overlap: bool | None = None,
              on_run=None, cluster: str | None = None, client=None,
              cluster_config: dict | None = None, on_event=None) -> dict:
    """Run every (variant, trial) of ``spec`` not yet in ``out_path``; return statistics.

    Parameters
    ----------
    spec : SweepSpec, a dict (as :func:`parse_spec`) or the path of a TOML file.
    out_path : the results file (created, or resumed when it holds this sweep).
    workers : worker processes (default ``os.cpu_count()``); 1 runs in this process.
        Ignored with ``lockstep``.
    trials : trials per variant (default: the spec's).
    lockstep : train all runs in this process as batched groups, one training call
        per step for every run of a group (:mod:`sparseae.lockstep`); the results
        equal independent runs (bit for bit on the CPU).  Default: on when a
        variant runs on cuda.  Runs go in waves of ``lockstep_runs`` runs, all of
        a wave in memory and in flight together (about 25 MB per run at the
        default sizes); they finish (and are written) group by group, and a stop
        lets the current wave finish and starts no further one.
        ``lockstep_overlap`` is :func:`sparseae.lockstep.run_lockstep`'s ``overlap``
        (default: on for cuda).
    progress : ``progress(done, total, eta_seconds)``, called once with ``done = 0``
        before the first run and after each finished run (``eta`` None until known).
    on_run : ``on_run(variant, trial, summary)``, called for each finished run (before
        ``progress``).
    cluster : run on Dask (``pip install 'sparseae[distributed]'``,
        :mod:`sparseae.sweep.cluster`): ``"local:N"`` (a LocalCluster of N single-threaded
        worker processes), ``"tcp://HOST:PORT"`` (an existing scheduler), ``"slurm"`` or
        ``"pbs"`` (dask-jobqueue, settings from the spec's ``[cluster]`` table updated by
        ``cluster_config``).  client : a ``distributed.Client`` of your own to run on
        instead (left open).  With either, ``workers`` and ``lockstep`` do not apply; a run
        that raises is recorded as failed (in the file's session entry) and the others go
        on (the error naming the failures is raised at the end); statistics add
        ``cluster``, ``dashboard``, ``retried``, ``failed``, ``cpu_seconds``,
        ``startup_seconds`` and ``efficiency`` (run seconds / (wall x workers)).
    on_event : ``on_event(kind, info)`` for Dask sweeps: ``cluster`` (description,
        dashboard, workers), ``started``, ``retried``, ``failed`` and ``workers`` events.
    stop : an event; once set no further run starts and runs in flight finish (and are
        written).  abort : an event; once set runs in flight stop at their next epoch
        boundary and are dropped.  A KeyboardInterrupt (no handler installed) aborts.

    Returns
    -------
    dict with ``out``, ``runs`` (in the sweep), ``done`` (executed now), ``skipped``
    (already in the file), ``abandoned``, ``interrupted``, ``workers``, ``wall_seconds``,
    ``run_seconds`` (sum over executed runs) and ``ratio`` (run_seconds / wall_seconds).
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    trials = spec.trials if trials is None else trials
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials: expected an integer >= 1, got {trials!r}")
    if isinstance(lockstep_runs, bool) or not isinstance(lockstep_runs, int) or \
            lockstep_runs < 1:
        raise ConfigError(f"lockstep_runs: expected an integer >= 1, got {lockstep_runs!r}")
    dask = cluster is not None or client is not None
    if dask:
        if cluster is not None and client is not None:
            raise ConfigError("give a cluster or a client, not both")
        if workers is not None:
            raise ConfigError("workers: not with a Dask cluster (use --cluster local:N)")
        if lockstep:
            raise ConfigError("lockstep: not with a Dask cluster (lockstep sweeps run on one "
                              "machine)")
        if any(v.config.device == "cuda" for v in spec.variants):
            raise ConfigError("device cuda: Dask sweeps run on the CPU (use --lockstep on one "
                              "machine for cuda)")
        from sparseae.sweep.cluster_settings import check_table, parse_target

        table = dict(spec.cluster)
        if cluster_config:
            table.update(check_table(cluster_config))
            table = check_table(table)  # what holds between keys, on the merged table
        if cluster is not None:
            parse_target(cluster)  # a bad target fails before anything else
    workers = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected an integer >= 1, got {workers!r}")
    out = os.fspath(out_path)
    check_size(spec, trials, "trials")
    with _lock.locked(out, ResultsError, "results"):
        check_runs(spec)
        todo, skipped = _plan(spec, out, trials)
        if dask:
            return _run_dask(spec, out, trials, todo, skipped, table, cluster, client,
                             progress, stop, abort, on_run, on_event)
        if lockstep is None:
            lockstep = any(v.config.device == "cuda" for v in spec.variants)
        if lockstep:
            n_workers = 1

            def executor(todo, session):
                return ex.run_lockstep_waves(todo, session, lockstep_runs, lockstep_overlap)
        else:
            n_workers = max(1, min(workers, len(todo)))
            if n_workers == 1:
                executor = ex.run_here
            else:
                def executor(todo, session):
                    return ex.run_pool(todo, session, n_workers)
        return _run(spec, out, trials, todo, skipped, executor, n_workers, bool(lockstep),
                    progress, stop, abort, on_run)


def _run_dask(spec, out, trials, todo, skipped, table, target, client, progress, stop, abort,
              on_run, on_event):
    from sparseae.sweep import cluster as dc

    stop = threading.Event() if stop is None else stop
    abort = threading.Event() if abort is None else abort
    threads = table.get("threads", 1)
    extra = {"cluster": target or "client", "dashboard": None, "retried": 0, "failed": [],
             "cpu_seconds": 0.0, "startup_seconds": 0.0}

    def go(c, text):
        extra["dashboard"] = dc.dashboard(c)
        n = dc.n_workers(c)
        if on_event is not None:
            on_event("cluster", {"cluster": text, "dashboard": extra["dashboard"], "workers": n})

        def executor(todo, session):
            session.stats.update(extra)
            return dc.run_dask(todo, session, c, threads, on_event)

        return _run(spec, out, trials, todo, skipped, executor, n, False, progress, stop,
                    abort, on_run)

    if not todo:  # nothing to run: no cluster to start
        return _run(spec, out, trials, todo, skipped, ex.run_here, 0, False, progress, stop,
                    abort, on_run) | extra | {"efficiency": 0.0}
    if client is not None:
        return go(client, "client")
    t0 = time.perf_counter()
    with dc.connect(target, table, len(todo), stop) as (c, text):
        extra["startup_seconds"] = time.perf_counter() - t0
        return go(c, text)


def _plan(spec: SweepSpec, out: str, trials: int):
    """``(todo, skipped)``: the ``(variant, trial, config)`` runs not yet in ``out``."""
    existing = existing_runs(out, spec)
    todo, skipped = [], 0
    for v, t in spec.runs(trials):
        config = v.trial_config(t)
        previous = existing.get((v.name, t))
        if previous is not None:
            if not same_config(json.loads(previous), config.to_dict()):
                raise ConfigError(f"{out}: run {v.name!r} trial {t} was made with another "
                                  "config; choose another output file")
            skipped += 1
            continue
        todo.append((v, t, config))
    return todo, skipped


def plan(spec, out_path, trials: int | None = None) -> list:
    """What :func:`run_sweep` would do, without running or writing anything: one dict
    per run (``variant``, ``trial``, ``seed``, ``done``: already in ``out_path``)."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec)
    trials = spec.trials if trials is None else trials
    check_size(spec, trials, "trials")
    out = os.fspath(out_path)
    todo, _ = _plan(spec, out, trials)
    pending = {(v.name, t) for v, t, _ in todo}
    return [{"variant": v.name, "trial": t, "seed": v.trial_config(t).seed,
             "done": (v.name, t) not in pending} for v, t in spec.runs(trials)]


def _run(spec, out, trials, todo, skipped, executor, n_workers, lockstep, progress, stop,
         abort, on_run=None) -> dict:
    stop = threading.Event() if stop is None else stop
    abort = threading.Event() if abort is None else abort
    writer = Writer(out, spec)
    stats = {"out": out, "runs": len(spec.variants) * trials, "done": 0, "skipped": skipped,
             "abandoned": 0, "interrupted": False, "workers": n_workers,
             "lockstep": lockstep}
    if lockstep:
        stats["lockstep_timing"] = {"groups": 0, "train_calls": 0, "train_seconds": 0.0,
                                    "eval_seconds": 0.0,
                                    "host_seconds": 0.0}
    started = _now()
    t0 = time.perf_counter()
    run_seconds = 0.0
    total = len(todo)
    if progress is not None:
        progress(0, total, None)

    def finished(item, rec):
        nonlocal run_seconds
        v, t, config = item
        row = {"variant": v.name, "trial": t, "seed": config.seed, "config": config.to_json(),
               "summary": rec["summary"], "history": rec["history"],
               "seconds": rec["seconds"], "finished": _now(), "pid": rec["pid"]}
        if "cpu_seconds" in rec:
            row["cpu_seconds"] = rec["cpu_seconds"]
        writer.add(row)
        run_seconds += rec["seconds"]
        stats["done"] += 1
        if on_run is not None:
            on_run(v.name, t, rec["summary"])
        if progress is not None:
            done = stats["done"]
            elapsed = time.perf_counter() - t0
            progress(done, total, elapsed / done * (total - done))

    try:
        error = executor(todo, ex.Session(writer, finished, stop, abort, stats))
    except BaseException as exc:  # Ctrl-C without a handler, or a failed run: keep what finished
        stats["interrupted"] = stats["interrupted"] or isinstance(exc, KeyboardInterrupt)
        _finish(writer, stats, started, t0, run_seconds)
        raise
    stats["interrupted"] = stats["interrupted"] or stop.is_set() or abort.is_set() or \
        stats["done"] + len(stats.get("failed", ())) < total
    _finish(writer, stats, started, t0, run_seconds)
    if error is not None:
        raise error
    return stats


def _finish(writer, stats, started, t0, run_seconds):
    wall = time.perf_counter() - t0
    stats["wall_seconds"] = wall
    stats["run_seconds"] = run_seconds
    stats["ratio"] = run_seconds / wall if wall > 0 else 0.0
    if "cluster" in stats:  # a Dask sweep: the share of the workers' time spent in runs
        slots = wall * stats["workers"]
        stats["efficiency"] = run_seconds / slots if slots > 0 else 0.0
    if stats["done"] == 0 and not writer.pending and not stats.get("failed"):
        return  # nothing new: leave the file as it is
    session = {"started": started, "wall_seconds": wall, "run_seconds": run_seconds,
               "done": stats["done"], "skipped": stats["skipped"], "workers": stats["workers"],
               "interrupted": stats["interrupted"]}
    for key in ("cluster", "retried", "failed", "cpu_seconds"):
        if key in stats:
            session[key] = stats[key]
    writer.write(session)

"""Where the runs of a sweep execute: this process, local worker processes, or
lockstep groups (:mod:`sparseae.lockstep`).

Every executor has one contract: ``executor(todo, session, ...)`` runs the
``(variant, trial, config)`` items of ``todo`` until they are done or
``session.stop`` / ``session.abort`` is set, hands each finished run's record
(:func:`record`) to ``session.finished(item, record)`` -- only the parent
process, through ``session.writer``, writes the results file -- counts runs
it gave up in ``session.stats["abandoned"]``, and returns the first failed
run's error (or None).  :func:`execute` (one run from a config dict) is what
every worker calls; it lives here so that worker processes import it from the
installed package.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from sparseae.config import TrainConfig
from sparseae.errors import ResultsError, SparseaeError


@dataclass
class Session:
    """What an executor needs besides its runs."""

    writer: object  #: the :class:`~sparseae.sweep.results.Writer` (``maybe_write``, ``wait_hint``)
    finished: object  #: ``finished(item, record)``, for every finished run
    stop: object  #: an event: start no further run, let those in flight finish
    abort: object  #: an event: stop the runs in flight at their next epoch boundary
    stats: dict  #: the sweep's statistics (``abandoned``, ``lockstep_timing``, ...)


def run_error(exc: BaseException, msg: str) -> Exception:
    """The sweep's error for a run that raised ``exc`` (``msg`` names the run)."""
    return type(exc)(msg) if isinstance(exc, SparseaeError) else ResultsError(msg)


_ABORT = None  # the worker's abort event (set by _init_worker)


def worker_threads(n_workers: int) -> int:
    """Numba threads per local worker: the cores shared out, at least one (two
    workers of two threads each on two cores burn a third more CPU for the same
    runs, measured)."""
    return max(1, (os.cpu_count() or 1) // max(1, n_workers))


def set_threads(threads: int) -> None:
    """Use ``threads`` numba threads in this process (at most numba's pool size)."""
    import numba

    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def init_worker(abort, parent: int, threads: int | None = None) -> None:
    """Worker processes ignore Ctrl-C (the parent decides), watch ``abort``, exit as
    soon as the sweep process ``parent`` is gone (even after a SIGKILL), and use
    ``threads`` numba threads (None: numba's default)."""
    global _ABORT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import warnings

    from sparseae.errors import SparseaeWarning

    warnings.simplefilter("ignore", SparseaeWarning)  # the parent showed them (check_runs)
    _ABORT = abort
    if threads is not None:
        set_threads(threads)
    from sparseae._parent import watch

    watch(parent)


def execute(config_dict: dict, abort=None) -> dict | None:
    """Run one config to the end; return summary, history (float64 arrays), wall seconds,
    CPU seconds (of this thread) and pid, or None when ``abort`` (checked between epochs)
    stopped it early."""
    from sparseae.runs import make_run

    abort = _ABORT if abort is None else abort
    t0, cpu0 = time.perf_counter(), time.thread_time()
    config = TrainConfig.from_dict(config_dict)
    run = make_run(config)
    summary = run.run(None, abort)
    if run.epoch < config.epochs:
        return None
    return record(run, summary, time.perf_counter() - t0, time.thread_time() - cpu0)


def record(run, summary: dict, seconds: float, cpu_seconds: float | None = None) -> dict:
    history = {k: np.asarray(v, dtype=np.float64) for k, v in run.history.items()}
    rec = {"summary": summary, "history": history, "seconds": seconds, "pid": os.getpid()}
    if cpu_seconds is not None:
        rec["cpu_seconds"] = cpu_seconds
    return rec


def _mp_context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:  # children forked from a clean single-threaded server
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["sparseae.sweep.executors"])
        return ctx
    return multiprocessing.get_context("spawn")


def run_here(todo, s: Session):
    """Run ``todo`` one after the other in this process."""
    for item in todo:
        if s.stop.is_set() or s.abort.is_set():
            break
        rec = execute(item[2].to_dict(), s.abort)
        if rec is None:
            s.stats["abandoned"] += 1
            break
        s.finished(item, rec)
        s.writer.maybe_write()
    return None


def run_pool(todo, s: Session, n_workers: int):
    """Run ``todo`` on a pool of local worker processes; return the first failed run's
    error (or None)."""
    ctx = _mp_context()
    worker_abort = ctx.Event()
    queue = iter(todo)
    running = {}
    error = None
    pool = cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                  initializer=init_worker,
                                  initargs=(worker_abort, os.getpid(),
                                            worker_threads(n_workers)))
    try:
        def submit():
            while error is None and not s.stop.is_set() and not s.abort.is_set() \
                    and len(running) < 2 * n_workers:
                item = next(queue, None)
                if item is None:
                    return
                running[pool.submit(execute, item[2].to_dict())] = item

        submit()
        while running:
            if s.abort.is_set():
                worker_abort.set()
            if s.stop.is_set() or s.abort.is_set() or error is not None:
                for fut in list(running):
                    if fut.cancel():
                        del running[fut]
                if not running:
                    break
            done, _ = cf.wait(list(running), timeout=s.writer.wait_hint(0.25),
                              return_when=cf.FIRST_COMPLETED)
            for fut in done:
                item = running.pop(fut)
                try:
                    rec = fut.result()
                except cf.CancelledError:
                    continue
                except Exception as exc:  # a run failed: stop the sweep, keep what finished
                    if error is None:
                        v, t, _ = item
                        msg = f"run {v.name!r} trial {t} failed: {type(exc).__name__}: {exc}"
                        error = run_error(exc, msg)
                        worker_abort.set()
                    continue
                if rec is None:
                    s.stats["abandoned"] += 1
                else:
                    s.finished(item, rec)
            s.writer.maybe_write()
            submit()
    except BaseException:
        worker_abort.set()
        for fut in running:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return error


def run_lockstep_waves(todo, s: Session, wave: int, overlap):
    """Run ``todo`` in lockstep in this process, ``wave`` runs at a time (the runs of
    a wave are all in memory and in flight together), writing runs as they finish."""
    from sparseae.lockstep import run_lockstep
    from sparseae.runs import make_run

    timing = s.stats["lockstep_timing"]
    for lo in range(0, len(todo), wave):
        if s.stop.is_set() or s.abort.is_set():
            return None
        items = {}
        runs = []
        for item in todo[lo:lo + wave]:
            run = make_run(item[2])
            items[id(run)] = item
            runs.append(run)

        def on_finish(run):
            t1 = time.perf_counter()
            summary = run.summary()
            seconds = run.lockstep_seconds + time.perf_counter() - t1
            s.finished(items[id(run)], record(run, summary, seconds))
            s.writer.maybe_write()

        part = {}
        try:
            done = run_lockstep(runs, on_finish, s.abort, max_runs=wave, timing=part,
                                overlap=overlap)
        finally:
            for key, value in part.items():
                timing[key] += value
        s.stats["abandoned"] += len(runs) - len(done)
    return None

"""Sweeps on a Dask cluster (the optional extra ``pip install 'sparseae[distributed]'``).

:func:`run_dask` is an executor (the contract of :mod:`sparseae.sweep.executors`)
that runs every pending run of a sweep as one Dask task on an existing
``distributed.Client``; :func:`connect` makes that client from a ``--cluster``
target:

* ``local:N`` -- a ``LocalCluster`` of N single-threaded worker processes;
* ``tcp://HOST:PORT`` (or ``tls://``, or ``HOST:PORT``) -- an existing scheduler;
* ``slurm`` / ``pbs`` -- dask-jobqueue's ``SLURMCluster`` / ``PBSCluster`` with
  the settings of the spec's ``[cluster]`` table
  (:data:`sparseae.sweep.cluster_settings.CLUSTER_KEYS`), scaled
  with ``adapt`` to the number of pending runs.

Each run is one task with a stable key ``("sparseae-run", variant, trial,
config hash)`` whose inputs are the run's config alone (seed included) and
whose result is the run's record (summary, history, seconds).  The client is
the only writer of the results file: it writes each result as it arrives
(``as_completed``) through the sweep's :class:`~sparseae.sweep.results.Writer`.
A worker that dies mid-run (SIGKILL, out of memory) costs only its run: the
scheduler runs it again elsewhere (up to ``distributed.scheduler.allowed-failures``
deaths, default 3); every start of a run is reported to the client (a Dask
event on the topic :data:`TOPIC`), so the retries are counted.  A run that
raises is recorded as failed (in the session entry of the results file) and
the sweep goes on.  Losing the scheduler leaves the results file with every
finished run and raises :class:`~sparseae.errors.ClusterError`; rerunning the
same command resumes.

Nothing here imports dask at module level: ``import sparseae`` never loads it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import time
from contextlib import contextmanager

from sparseae.errors import ClusterError, SparseaeWarning
from sparseae.sweep.cluster_settings import (import_distributed, jobqueue_cluster, parse_target,
                                             worker_env)
from sparseae.sweep.executors import execute, run_error, set_threads

#: The Dask event topic on which every run reports its start (key, worker, pid).
TOPIC = "sparseae-run"
#: The first element of every task key.
KEY_PREFIX = "sparseae-run"

@contextmanager
def connect(target: str, table: dict, pending: int, stop=None):
    """A ``distributed.Client`` for ``target`` (see :func:`parse_target`), closed (and a
    cluster started here shut down) on exit.  Yields ``(client, description)``."""
    kind, arg = parse_target(target)
    distributed = import_distributed()
    cluster = client = None
    try:
        if kind == "local":
            from sparseae.sweep._dask_worker import PARENT_VAR

            env = {k: os.path.expandvars(v) for k, v in worker_env(table).items()}
            env[PARENT_VAR] = str(os.getpid())
            try:
                cluster = distributed.LocalCluster(
                    n_workers=arg, threads_per_worker=1, processes=True,
                    dashboard_address=":0", env=env, preload=["sparseae.sweep._dask_worker"],
                    silence_logs=logging.ERROR)
            except RuntimeError as exc:
                raise ClusterError(
                    f"local:{arg}: the worker processes did not start ({exc}); a script "
                    "must run the sweep under if __name__ == '__main__':") from None
            client = distributed.Client(cluster)
            _wait_for_workers(client, arg, stop)
            text = f"LocalCluster of {arg} worker process{'es' if arg != 1 else ''}"
        elif kind == "address":
            try:
                client = distributed.Client(arg)  # timeout: distributed.comm.timeouts.connect
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"--cluster {arg}: cannot reach the Dask scheduler "
                                   f"({type(exc).__name__}: {exc})") from None
            text = f"scheduler {arg}"
        else:
            cluster = jobqueue_cluster(kind, table)
            per_job = max(1, table.get("cores", 1) // table.get("threads", 1))
            jobs = math.ceil(pending / per_job)
            if "jobs" in table:
                jobs = min(jobs, table["jobs"])
            cluster.adapt(minimum_jobs=min(table.get("minimum_jobs", 0), jobs),
                          maximum_jobs=max(1, jobs))
            client = distributed.Client(cluster)
            text = f"{kind.upper()} jobs via dask-jobqueue (adapt, at most {max(1, jobs)})"
    except BaseException:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        raise
    try:
        yield client, text
    finally:
        try:
            client.close()
        finally:
            if cluster is not None:
                cluster.close()


def _wait_for_workers(client, n, stop, timeout=120.0):
    deadline = time.monotonic() + timeout
    while n_workers(client) < n:
        if stop is not None and stop.is_set():
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"local:{n}: the workers did not start within {timeout:.0f} s")
        time.sleep(0.1)


def dashboard(client) -> str | None:
    """The dashboard's address, or None when the scheduler serves none."""
    try:
        if "dashboard" not in client.scheduler_info(n_workers=0).get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # no scheduler info (yet): no address to show
        return None


def n_workers(client) -> int:
    try:
        return len(client.scheduler_info(n_workers=-1)["workers"])
    except Exception:
        return 0


# ----------------------------------------------------------------------------- the task


class _Never:
    """A run on a worker is never stopped from inside: the client cancels its task (a
    cluster sparseae started is shut down, which ends the runs in flight)."""

    @staticmethod
    def is_set() -> bool:
        return False


def run_task(config: dict, threads: int = 1) -> dict:
    """One run of a sweep on a Dask worker (``threads`` numba threads): the record of
    :func:`sparseae.sweep.executors.execute` plus ``worker``.  Reports its start on
    :data:`TOPIC` first."""
    import warnings

    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    worker.log_event(TOPIC, {"key": list(key) if isinstance(key, tuple) else key,
                             "worker": worker.address, "pid": os.getpid()})
    set_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SparseaeWarning)  # the client showed them (check_runs)
        rec = execute(config, _Never)
    rec["worker"] = worker.address
    return rec


def task_key(variant: str, trial: int, config: dict) -> tuple:
    """The stable Dask key of a run: the same run of the same config, the same key."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    return (KEY_PREFIX, variant, int(trial), digest.hexdigest()[:16])


# ----------------------------------------------------------------------------- executor


def run_dask(todo, s, client, threads: int = 1, on_event=None):
    """Run ``todo`` as Dask tasks on ``client`` (the executor contract of
    :mod:`sparseae.sweep.executors`).

    Every run is submitted at once (so ``adapt`` sees them all); results are written as
    they arrive.  ``s.stop``: pending tasks are cancelled, running ones finish and are
    written.  ``s.abort``: every task is cancelled (the runs in flight are dropped; they
    end when :func:`connect` shuts down the cluster it started, while the workers of an
    existing scheduler finish them unseen).  A run that raises (or whose workers died more often than the
    scheduler allows) is recorded in ``s.stats["failed"]`` and the sweep goes on; the
    return value is then an error naming the count and the first failure.  Statistics:
    ``retried`` (starts beyond the first), ``cpu_seconds``, ``workers`` (the most seen).
    ``on_event(kind, info)`` gets ``started`` (variant, trial, worker, running),
    ``retried``, ``failed`` (variant, trial, error) and ``workers`` (count) events.
    """
    from distributed import as_completed

    stats = s.stats
    stats.setdefault("failed", [])
    stats.setdefault("retried", 0)
    stats.setdefault("cpu_seconds", 0.0)
    items, configs, keys = {}, [], []
    for item in todo:
        v, t, config = item
        d = config.to_dict()
        key = task_key(v.name, t, d)
        items[key] = item
        configs.append(d)
        keys.append(key)
    inbox = collections.deque()  # start events, filled on the client's event loop
    starts = collections.Counter()
    done_keys, ours = set(), set()  # finished (any way); cancelled by us
    lost = None

    def on_start(event):
        _, msg = event
        key = tuple(msg["key"]) if isinstance(msg.get("key"), list) else msg.get("key")
        if key in items:
            inbox.append((key, msg))

    def emit(kind, **info):
        if on_event is not None:
            on_event(kind, info)

    def drain():
        while inbox:
            key, msg = inbox.popleft()
            starts[key] += 1
            v, t, _ = items[key]
            if starts[key] > 1:
                stats["retried"] += 1
                emit("retried", variant=v.name, trial=t, worker=msg.get("worker"),
                     starts=starts[key])
            emit("started", variant=v.name, trial=t, worker=msg.get("worker"),
                 pid=msg.get("pid"), running=running())

    def running():
        return sum(1 for k in starts if k not in done_keys)

    def cancel(futs):
        futs = [f for f in futs if f.key not in done_keys and not f.done()]
        if futs:
            ours.update(f.key for f in futs)
            client.cancel(futs)

    client.subscribe_topic(TOPIC, on_start)
    futures = dict(zip(keys, client.map(run_task, configs, key=keys, threads=threads)))
    stopped = aborted = False
    next_poll = 0.0
    first_error = None
    ac = as_completed(list(futures.values()), with_results=True, raise_errors=False)
    try:
        while not ac.is_empty():
            if s.abort.is_set() and not aborted:
                aborted = stopped = True
                cancel(futures.values())
            elif s.stop.is_set() and not stopped:
                stopped = True
                drain()
                cancel([f for k, f in futures.items() if k not in starts])
            batch = _next_batch(ac, s.writer.wait_hint(0.25))
            drain()
            for fut, result in batch:
                # what arrived decides (the future's status may have moved on since: a
                # worker holding the result may have died), then the cluster forgets it
                key = fut.key
                futures.pop(key, None)
                fut.release()
                done_keys.add(key)
                item = items[key]
                if _is_error(result):
                    err = _failure(item, result[1], starts[key])
                    stats["failed"].append(err["record"])
                    first_error = first_error or err
                    emit("failed", **err["record"])
                elif isinstance(result, BaseException):  # cancelled
                    if key in ours:  # on stop or abort
                        stats["abandoned"] += key in starts
                    elif lost is None:  # by nobody here: the scheduler went away
                        lost = str(result)
                else:
                    stats["cpu_seconds"] += result.get("cpu_seconds", 0.0)
                    result.pop("worker", None)
                    s.finished(item, result)
            s.writer.maybe_write()
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + 1.0
                n = n_workers(client)
                if n > stats.get("workers", 0):
                    stats["workers"] = n
                    emit("workers", workers=n)
            if lost is not None:
                break
    except BaseException:
        try:
            cancel(futures.values())
        except Exception:
            pass
        raise
    finally:
        for fut in futures.values():
            fut.release()
        try:
            client.unsubscribe_topic(TOPIC)
        except Exception:
            pass
    if lost is not None:
        stats["interrupted"] = True
        reason = " ".join(lost.split())
        raise ClusterError(
            f"lost the Dask scheduler ({reason[:160]}); the {stats['done']} runs finished in "
            f"this session are in {s.writer.out}: rerun the same command to resume")
    if first_error is not None:
        n = len(stats["failed"])
        rec = first_error["record"]
        msg = (f"{n} run{'s' if n != 1 else ''} failed (recorded in {s.writer.out}; a rerun "
               f"retries them); first: run {rec['variant']!r} trial {rec['trial']} failed: "
               f"{rec['error']}")
        return run_error(first_error["exc"], msg)
    return None


def _next_batch(ac, timeout: float) -> list:
    """Results that arrived, waiting up to ``timeout`` seconds for the first one."""
    batch = ac.next_batch(block=False)
    if batch or ac.is_empty():
        return batch
    cond = getattr(ac, "thread_condition", None)
    if cond is None:
        time.sleep(min(timeout, 0.05))
    else:
        with cond:
            if not ac.has_ready():
                cond.wait(timeout)
    return ac.next_batch(block=False)


def _is_error(result) -> bool:
    """Whether ``result`` is an errored future's ``(type, exception, traceback)``."""
    return isinstance(result, tuple) and len(result) == 3 and isinstance(result[1], BaseException)


def _failure(item, exc, starts: int) -> dict:
    v, t, _ = item
    name = type(exc).__name__
    if name == "KilledWorker":
        text = (f"KilledWorker: its worker died {max(starts, 1)} time(s) while running it "
                "(out of memory? see the workers' logs)")
    else:
        text = f"{name}: {' '.join(str(exc).split())}"
    return {"exc": exc,
            "record": {"variant": v.name, "trial": t, "error": text}}


__all__ = ["TOPIC", "connect", "dashboard", "n_workers", "run_dask", "run_task", "task_key"]

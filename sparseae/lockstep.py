"""Lockstep: advance many independent runs together, one batched training call per step.

A sweep on a GPU gains from one launch that trains many networks.  Each run
(:class:`~sparseae.canonical.CanonicalRun` or
:class:`~sparseae.coevolution.LipiRun`) is written as a generator of training
requests (``epoch_steps``): it does its own host-side work -- neighbourhood
evaluation, tournament, pruning decisions, replacement, lr mutation, all with
its own Generator -- and yields the pairs it wants trained next.  The driver
here collects the current request of every run of a *group*, trains all of
them in one ``train_epoch_many`` call of the device's kernels, and resumes
every run.  The runs' own evaluations between requests (all-pairs L1,
replacement L1, CONJUNCTIVE marks) run on the CPU, on the threads of their
host work.  So each run keeps its seed, its schedule decisions and (Lipi-AE-S)
its sequential cell order (a Lipi-AE-S run here trains one cell per request,
not in waves, which gives the same result); only the training of different
runs' pairs is batched.  On the CPU the result of every run is bit-identical to running it
alone (tested); on cuda each training call agrees with the CPU to float32
rounding (README, "GPU").

Groups
------
Runs share a group, and so one launch per step, when their training calls
have the same shape and the same number of them:

* architecture, batch size, training-set size, Adam variant and constants
  (one kernel configuration), and
* the same number of requests over the run: ``epochs`` for canonical runs,
  ``epochs x population`` for Lipi-AE-S (``epochs`` with ``sync_cells``), so
  that every row of the group is trained at every step and all finish
  together.

A group owns one encoder and one decoder arena holding every run's work rows
(the runs use row views of them, :meth:`~sparseae.model.Arena.rows`), the
VARIANCE statistics, the per-row batch orders and learning rates, and one
training matrix ``X`` that stacks the runs' distinct training splits (each
run's ``data.train`` becomes a view of its block; a run's orders are offset
to its block).  The groups of a sweep take turns, one step each.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import os
import time

import numpy as np

from sparseae.data import Dataset
from sparseae.model import Arena

#: At most this many runs share one group (bounds memory; larger sets make several groups).
MAX_GROUP_RUNS = 1024


def requests_left(run) -> int:
    """Training requests the run will still make: one per epoch for canonical
    runs and with ``sync_cells``, one per cell and epoch otherwise."""
    c = run.config
    per_epoch = 1 if (c.paradigm == "canonical" or c.sync_cells) else c.population
    return (c.epochs - run.epoch) * per_epoch


def group_key(run) -> tuple:
    """Runs with equal keys can be trained in one call at every step (and their
    evaluations batched: the same paradigm and population)."""
    c = run.config
    return (c.device, c.paradigm, c.population if c.paradigm == "lipi" else 1, run.arch.sizes,
            c.batch_size, run.data.train.shape, c.adam == "fresh", c.beta1, c.beta2, c.eps,
            run.work_rows, requests_left(run))


class Group:
    """Runs trained together: shared work arenas, statistics, orders, lrs and data."""

    def __init__(self, runs: list):
        from sparseae import backend
        from sparseae.backend import adam_config, kernels

        self.runs = list(runs)
        first = self.runs[0]
        c = first.config
        self.device, self.config = c.device, c
        self.kernels = kernels(self.device)
        self.adam = adam_config(c)
        #: train row by row with the serial CPU kernel (set when training overlaps
        #: other threads' work: numba's parallel loop would oversubscribe the
        #: cores, and two parallel regions at once crash its workqueue layer)
        self.serial = False
        self.width = first.work_rows
        P = self.width * len(self.runs)
        self.P = P
        self.enc = Arena(first.arch.encoder_shapes(), P)
        self.dec = Arena(first.arch.decoder_shapes(), P)
        self.stats_e = np.zeros((P, self.enc.n_units, 3))
        self.stats_d = np.zeros((P, self.dec.n_units, 3))
        n, D = first.data.train.shape
        self.orders = np.zeros((P, n), np.int64)
        self.lrs = np.zeros(P, np.float64)
        # one training matrix: each distinct training split once (by content: runs
        # of one data file or data seed load equal copies)
        blocks, offset = {}, []
        for run in self.runs:
            key = hashlib.sha256(run.data.train.tobytes()).digest()
            if key not in blocks:
                blocks[key] = (len(blocks) * n, run.data.train)
            offset.append(blocks[key][0])
        self.X = np.empty((len(blocks) * n, D), np.float32)
        for lo, train in blocks.values():
            self.X[lo:lo + n] = train
        self.offset = np.asarray(offset, np.int64)
        self.X_device = self.X if self.device == "cpu" else self.kernels.to_device(self.X)
        # the runs' own kernel calls (CONJUNCTIVE marks) run on the CPU threads of
        # their host work; the group's training goes to its device
        host = backend.get("cpu")
        for j, run in enumerate(self.runs):
            run.backend = host
            lo, hi = j * self.width, (j + 1) * self.width
            run.bind_work(self.enc.rows(lo, hi), self.dec.rows(lo, hi),
                          self.stats_e[lo:hi], self.stats_d[lo:hi])
            o = int(self.offset[j])
            d = run.data
            run.data = Dataset(self.X[o:o + n], d.test, d.validation)
        # Lipi-AE-S centres live in the group's arenas too, so that every run's
        # evaluations of a step (all-pairs, replacement, population statistics,
        # the figure metric) are one call of the group's device
        self.cells = c.population if c.paradigm == "lipi" else 0
        if self.cells:
            R, N = len(self.runs), self.cells
            self.centres_e = Arena(first.arch.encoder_shapes(), R * N)
            self.centres_d = Arena(first.arch.decoder_shapes(), R * N)
            for j, run in enumerate(self.runs):
                run.bind_centres(self.centres_e.rows(j * N, (j + 1) * N),
                                 self.centres_d.rows(j * N, (j + 1) * N))
        # The batched evaluations run on the CPU (one parallel call per kind and
        # step).  kernels.cuda has the same calls, but a group's arenas live on the
        # host: a launch would copy every run's centres to the device and back,
        # which costs more than the evaluation saves until the arenas stay on the
        # device (README, "GPU": not done yet).
        self.evaluator = backend.get("cpu")
        self.call = None  # set by run_lockstep: the thread every device call goes through
        self.programs = [None] * len(self.runs)
        self.seconds = [0.0] * len(self.runs)  # each run's host work
        self.index = {id(run): j for j, run in enumerate(self.runs)}
        self.pending = [None] * len(self.runs)
        self.steps = 0  # training calls made
        self.train_seconds = 0.0  # in the training calls
        self.eval_seconds = 0.0  # in the batched evaluation calls
        self.host_seconds = 0.0  # in the runs' host work between them

    def advance(self, pool=None) -> list:
        """Let every run do its host work up to its next request (on the
        threads of ``pool``, a ``concurrent.futures`` executor, when given),
        train all the requests in one call, and return the runs that finished
        (all of them, or none: a group's runs finish together)."""
        finished = self.prepare(pool)
        if not finished:
            self.deliver(self.train())
        return finished

    def prepare(self, pool=None) -> list:
        """The host half of a step: resume every run up to its next training
        request -- carrying out the evaluation requests on the way, every run's
        of one kind in one call -- and stage the training requests (orders,
        lrs); return the runs that finished."""
        t_host = time.perf_counter()
        evals = self.eval_seconds
        finished = []
        todo = list(range(len(self.runs)))
        while todo:
            results = map(self._next, todo) if pool is None else pool.map(self._next, todo)
            waiting = []
            for j, reqs in zip(todo, results):
                if reqs is None:
                    finished.append(self.runs[j])
                    continue
                self.pending[j] = reqs
                if reqs[0]["kind"] != "train":
                    waiting.append(j)
            if finished:
                assert len(finished) == len(self.runs), "a group's runs must finish together"
                self.host_seconds += time.perf_counter() - t_host - (self.eval_seconds - evals)
                return finished
            if waiting:
                self.evaluate(waiting)
            todo = waiting
        self.with_stats = False
        for j, ctxs in enumerate(self.pending):
            base = j * self.width
            assert len(ctxs) == self.width
            for ctx in ctxs:
                r = base + ctx["row"]
                self.orders[r] = ctx["order"]
                self.orders[r] += self.offset[j]
                self.lrs[r] = ctx["lr"]
                self.with_stats = self.with_stats or ctx["with_stats"]
        self.host_seconds += time.perf_counter() - t_host - (self.eval_seconds - evals)
        return []

    def evaluate(self, js: list) -> None:
        """Carry out the pending evaluation requests of runs ``js``, every kind and
        shape in one call of the group's device."""
        from sparseae.run import fulfil_pairs

        t0 = time.perf_counter()
        N, W = self.cells, self.width
        by_arena, population = {}, []
        for j in js:
            for req in self.pending[j]:
                if req["kind"] == "pairs":
                    base = (j * (N if req["arena"] == "centres" else W), int(self.offset[j]))
                    by_arena.setdefault(req["arena"], []).append((req, base))
                elif req["kind"] == "population":
                    population.append((j, req))
                else:
                    raise ValueError(f"unknown request kind {req['kind']!r}")
        arenas = {"work": (self.enc, self.dec)}
        if N:
            arenas["centres"] = (self.centres_e, self.centres_d)
        for name, items in by_arena.items():
            enc, dec = arenas[name]
            X = self.X if self.evaluator.device == "cpu" else self.X_device
            self._device(lambda: fulfil_pairs(self.evaluator, enc, dec, X,
                                              [r for r, _ in items], [b for _, b in items]))
        if population:
            stats = self._device(lambda: [
                self.evaluator.population_stats(h.params, h.mask, N)
                for h in (self.centres_e, self.centres_d)])
            for j, req in population:
                req["result"] = (stats[0][0][j], stats[0][1][j], stats[1][0][j], stats[1][1][j])
        self.eval_seconds += time.perf_counter() - t0

    def _device(self, fn):
        return fn() if self.call is None else self.call(fn)

    def train(self) -> np.ndarray:
        """The device half of a step: one training call for every staged
        request; returns the mean batch L1 of every row.  Touches only this
        group's arrays, so it may run on another thread while other groups
        do their host work."""
        t0 = time.perf_counter()
        c = self.config
        if self.serial:  # beside other threads' work: no parallel kernel, one core
            losses = np.array([self.kernels.train_epoch(
                self.enc.half(p), self.dec.half(p), self.X_device, self.orders[p],
                c.batch_size, float(self.lrs[p]), self.adam,
                (self.stats_e[p], self.stats_d[p]), self.with_stats) for p in range(self.P)])
        else:
            every = slice(0, self.P)
            losses = self.kernels.train_epoch_many(
                self.enc.half(every), self.dec.half(every), self.X_device, self.orders,
                c.batch_size, self.lrs, self.adam, (self.stats_e, self.stats_d),
                self.with_stats)
        self.steps += 1
        self.last_seconds = time.perf_counter() - t0
        self.train_seconds += self.last_seconds
        return losses

    def deliver(self, losses) -> None:
        """Hand every run its requests' losses (and its share of the call's time)."""
        share = self.last_seconds / len(self.runs)
        for j, ctxs in enumerate(self.pending):
            self.runs[j].train_seconds += share
            for ctx in ctxs:
                ctx["loss"] = float(losses[j * self.width + ctx["row"]])

    def _next(self, j: int):
        """The next request of run ``j`` (None once it has trained all its epochs)."""
        t0 = time.perf_counter()
        try:
            return self._resume(j)
        finally:
            self.seconds[j] += time.perf_counter() - t0

    def _resume(self, j: int):
        run = self.runs[j]
        while True:
            if self.programs[j] is None:
                if run.epoch >= run.config.epochs:
                    return None
                self.programs[j] = run.epoch_steps()
            try:
                return next(self.programs[j])
            except StopIteration:
                self.programs[j] = None

    def run_seconds(self, run) -> float:
        """A run's own time so far: its host work plus its share of the training and
        evaluation calls."""
        j = self.index[id(run)]
        return self.seconds[j] + (self.train_seconds + self.eval_seconds) / len(self.runs)


def make_groups(runs: list, max_runs: int = MAX_GROUP_RUNS, split: int = 1) -> list:
    """Partition ``runs`` into groups and bind every run to its group's work space.

    Runs of equal :func:`group_key` (in first-seen order) go into
    ``max(split, ceil(len / max_runs))`` groups of near-equal size (at most
    one group per run).
    """
    by_key = {}
    for run in runs:
        if run.config.paradigm == "lipi":
            run.waves = False  # one cell per request: every row of a group trains each step
        by_key.setdefault(group_key(run), []).append(run)
    groups = []
    for members in by_key.values():
        k = min(len(members), max(int(split), -(-len(members) // max_runs)))
        bounds = np.linspace(0, len(members), k + 1).round().astype(int)
        groups += [Group(members[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return groups


def run_lockstep(runs: list, on_finish=None, abort=None, max_runs: int = MAX_GROUP_RUNS,
                 threads: int | None = None, timing: dict | None = None,
                 overlap: bool | None = None) -> list:
    """Train ``runs`` to the end in lockstep groups; return the runs that finished.

    ``on_finish(run)`` is called for every run as it finishes (a group's runs
    finish at the same step), after setting ``run.lockstep_seconds`` (its own
    host work plus its share of the group's training calls).  Every run is in flight from the start: once
    ``abort`` (an event) is set the loop returns at the next step, leaving
    the unfinished runs unfinished.  ``threads`` (default: the CPU count) run
    the runs' host work between steps concurrently.

    ``overlap`` (default: on for cuda) splits each set of runs of one shape
    into two groups and runs every training call on a background thread, so
    one group trains while the other does its host work; a step then costs
    about the larger of the two instead of their sum.  Runs share no state,
    so none of this changes any result (tested on the CPU).

    ``timing`` (a dict) receives the groups' total ``train_seconds`` (in the
    training calls), ``eval_seconds`` (in the batched evaluation calls),
    ``host_seconds`` (the runs' own work between them), ``train_calls`` and
    ``groups``.
    """
    from sparseae.kernels import cpu

    compile_seconds = cpu.prepare()
    if overlap is None:
        overlap = any(r.config.device == "cuda" for r in runs)
    groups = make_groups(runs, max_runs, split=2 if overlap else 1)
    for g in groups:
        g.serial = overlap and g.device == "cpu"
    for run in runs:
        run.compile_seconds = compile_seconds
    threads = (os.cpu_count() or 1) if threads is None else int(threads)
    every = list(groups)
    try:
        with contextlib.ExitStack() as stack:
            pool = None if threads <= 1 else stack.enter_context(
                cf.ThreadPoolExecutor(threads, thread_name_prefix="lockstep"))
            trainer = None if not overlap else stack.enter_context(
                cf.ThreadPoolExecutor(1, thread_name_prefix="lockstep-train"))
            if trainer is not None:  # every device call from one thread, in order
                for g in groups:
                    g.call = lambda fn: trainer.submit(fn).result()
            return _loop(groups, pool, trainer, on_finish, abort)
    finally:
        if timing is not None:
            timing.update(train_seconds=sum(g.train_seconds for g in every),
                          eval_seconds=sum(g.eval_seconds for g in every),
                          host_seconds=sum(g.host_seconds for g in every),
                          train_calls=sum(g.steps for g in every), groups=len(every))


def _loop(groups, pool, trainer, on_finish, abort) -> list:
    """Groups take turns: collect a group's last training call, let its runs do
    their host work, start its next call (on ``trainer`` when given)."""
    done = []
    inflight = {}
    try:
        while groups:
            for g in list(groups):
                if abort is not None and abort.is_set():
                    return done
                if g in inflight:
                    g.deliver(inflight.pop(g).result())
                finished = g.prepare(pool)
                if finished:
                    groups.remove(g)
                    for run in finished:
                        run.lockstep_seconds = g.run_seconds(run)
                        done.append(run)
                        if on_finish is not None:
                            on_finish(run)
                elif trainer is None:
                    g.deliver(g.train())
                else:
                    inflight[g] = trainer.submit(g.train)
        return done
    finally:
        cf.wait(list(inflight.values()))  # no call may outlive the loop

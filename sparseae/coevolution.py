"""Lipi-AE-S: spatial cooperative coevolution of encoders and decoders.

``N`` cells on a ring each hold a centre encoder, a centre decoder and a
learning rate.  Each epoch visits the cells in an order reshuffled after every
epoch (the first epoch in index order); a visited cell sees the current
centres, so cells visited earlier in the epoch are already updated.  For one
cell (ALGORITHM.md section 5):

1. neighbourhood: its own centre plus the centres at distance 1..r on both
   sides (2r + 1 encoders and decoders; small rings repeat centres);
2. every encoder with every decoder on one training batch; an encoder's
   fitness is its best L1 over the decoders;
3. size-2 tournament over encoder indices (with replacement; lower fitness
   wins, ties go to the second draw); the winner ``i`` selects encoder ``i``
   and decoder ``i``;
4. one epoch of training of that pair (Adam state travels with the
   individual in the default profile);
5. evaluation on one batch, maybe a pruning event (T = epochs - 1, n = 2r+1),
   and the pair replaces the centre;
6. the cell's lr mutates: ``lr += N(0, lr_sigma)``, clipped to [1e-9, 10].

The loop is plain Python over epochs and cells; all per-sample work is in the
compiled kernels.  Individuals are arena rows: copying one is a row copy.
"""

from __future__ import annotations

import time

import numpy as np

from sparseae import backend
from sparseae import checkpoint as ckpt_io
from sparseae._checks import check_run
from sparseae.backend import adam_config
from sparseae.canonical import (
    check_batch,
    check_same_run,
    make_data,
    pair_metrics,
    prune_event,
    read_checkpoint,
    resolve_arch,
    restore_arenas,
    resume_config,
    run_fingerprint,
    save_run,
)
from sparseae.config import TrainConfig
from sparseae.data import Dataset
from sparseae.errors import ConfigError
from sparseae.metrics import figure_epoch, preserved_total
from sparseae.model import Arena, Autoencoder
from sparseae.schedules import probability

LR_MIN, LR_MAX = 1e-9, 10.0
_RESUME_KEYS = ("epoch", "rng", "train_seconds", "seconds", "steps", "arch", "data_sha256")

#: Per-cell history series, each an (epochs, N) array in the checkpoint.
CELL_SERIES = ("selection_loss", "replacement_loss", "lr", "preserved", "pruned")
#: Population series, one value per epoch.
POP_SERIES = ("best_replacement_loss", "diversity_encoder", "diversity_decoder",
              "jaccard_encoder", "jaccard_decoder", "preserved_encoder", "preserved_decoder")
#: The figures' metric: epochs at which it was recorded, and the mean over centres of
#: their training-set L1 ("mean_L1" of the paper's figures).
FIGURE_SERIES = ("figure_epoch", "mean_l1")


def neighbourhood(cell: int, n_cells: int, radius: int) -> np.ndarray:
    """Centre indices of a cell's neighbourhood: itself, then distance 1..r
    left and right (``[c, c-1, c+1, c-2, c+2, ...]`` modulo the ring)."""
    idx = [cell]
    for d in range(1, radius + 1):
        idx += [(cell - d) % n_cells, (cell + d) % n_cells]
    return np.array(idx, np.int64)


def best_case_fitness(losses: np.ndarray) -> np.ndarray:
    """An encoder's fitness: its lowest loss over all decoders (rows = encoders)."""
    return losses.min(axis=1)


def tournament(fitness: np.ndarray, rng: np.random.Generator) -> int:
    """Size-2 tournament with replacement: the lower fitness wins, ties go to the second draw."""
    a, b = rng.integers(0, fitness.shape[0], 2)
    return int(a) if fitness[a] < fitness[b] else int(b)


def mutate_lr(lr: float, sigma: float, rng: np.random.Generator) -> float:
    return float(np.clip(lr + rng.normal(0.0, sigma), LR_MIN, LR_MAX))


def _mean_pairwise_l2(rows: np.ndarray) -> float:
    """Mean L2 distance over all pairs of rows (float64 differences, so centres
    that differ in a few weights still get an accurate distance)."""
    from sparseae.kernels import cpu

    n = rows.shape[0]
    if n < 2:
        return 0.0
    d2 = cpu.pairwise_sq_l2(np.ascontiguousarray(rows, np.float32))
    iu = np.triu_indices(n, 1)
    return float(np.sqrt(d2[iu]).mean())


def _mean_jaccard(masks: np.ndarray) -> float:
    """Mean Jaccard overlap of the live entries over all pairs of masks (1 when
    both are empty), from exact counts (no BLAS threads beside the lockstep's)."""
    from sparseae.kernels import cpu

    n = masks.shape[0]
    if n < 2:
        return 1.0
    inter = cpu.mask_overlaps(np.ascontiguousarray(masks, np.uint8)).astype(np.float64)
    live = np.diag(inter)
    union = live[:, None] + live[None, :] - inter
    iu = np.triu_indices(n, 1)
    u = union[iu]
    return float(np.where(u > 0, inter[iu] / np.where(u > 0, u, 1.0), 1.0).mean())


class LipiRun:
    """The state of one Lipi-AE-S run; :meth:`run` trains it to the end.

    Attributes
    ----------
    encoders, decoders : Arena with one row per cell (the centres).
    cell_lr : float64 ``(N,)`` learning rate of each cell.
    order : int64 ``(N,)`` visiting order of the next epoch.
    operators : operator name of each cell.
    rng : the run's Generator (init, batches, tournaments, training order,
        pruning, lr mutation, visiting order).
    history : per-cell series (lists of length-N arrays) and population series.
    """

    def __init__(self, config: TrainConfig, data: Dataset | None = None):
        self.config = config.validate()
        if config.paradigm != "lipi":
            raise ConfigError(f"paradigm: LipiRun needs paradigm lipi, got {config.paradigm!r}")
        self.data = make_data(config) if data is None else data
        check_batch(config, self.data)
        self.arch = resolve_arch(config, self.data)
        check_run(config, self.data, self.arch)
        self.rng = np.random.default_rng(config.seed)
        N = config.population
        self.encoders = Arena(self.arch.encoder_shapes(), N)
        self.decoders = Arena(self.arch.decoder_shapes(), N)
        for k in range(N):  # cell by cell, encoder then decoder, as Autoencoder(seed=rng) draws
            self.encoders.init(self.rng, [k])
            self.decoders.init(self.rng, [k])
        self.backend = backend.get(config.device)  # fails now when the device is not usable
        self.work_e = Arena(self.arch.encoder_shapes(), 1)
        self.work_d = Arena(self.arch.decoder_shapes(), 1)
        self.wi = 0  # the work row of this run's own pair (sync mode uses one row per cell)
        self.cell_lr = np.full(N, float(config.lr))
        self.order = np.arange(N, dtype=np.int64)
        self.operators = config.cell_operators()
        self.epoch = 0
        self.history = {k: [] for k in CELL_SERIES + POP_SERIES + FIGURE_SERIES}
        self.train_seconds = 0.0
        self.seconds = 0.0
        self.steps = 0
        self._steps_per_epoch = -(-self.data.train.shape[0] // config.batch_size)
        self._stats_e = np.zeros((self.encoders.n_units, 3))
        self._stats_d = np.zeros((self.decoders.n_units, 3))

    # ------------------------------------------------------------------ loop

    @property
    def n_cells(self) -> int:
        return self.config.population

    def _batch(self) -> np.ndarray:
        n = self.data.train.shape[0]
        return self.data.train[self.rng.choice(n, self.config.batch_size, replace=False)]

    def begin_cell(self, cell: int, row: int | None = None) -> dict:
        """Steps 1-3 for one cell: neighbourhood, all-pairs L1, tournament; the
        winning pair is copied to work row ``row`` (default: this run's), ready
        for :meth:`train_cell`."""
        c = self.config
        E, D = self.encoders, self.decoders
        wi = self.wi if row is None else row
        stats_e = self._stats_e if row is None else self._sync_stats_e[row]
        stats_d = self._stats_d if row is None else self._sync_stats_d[row]
        idx = neighbourhood(cell, self.n_cells, c.radius)
        losses = self.backend.all_pairs(E.params[idx], E.table, D.params[idx], D.table,
                                        self._batch())
        fitness = best_case_fitness(losses)
        win = tournament(fitness, self.rng)
        src = int(idx[win])
        moments = c.adam != "fresh"  # a fresh Adam's moments are 0 in every row
        self.work_e.copy_row(wi, src, source=E, moments=moments)
        self.work_d.copy_row(wi, src, source=D, moments=moments)
        operator = self.operators[cell]
        with_stats = operator == "variance"
        if with_stats:
            stats_e[...] = 0.0
            stats_d[...] = 0.0
        return {"cell": cell, "row": wi, "selection_loss": float(fitness[win]),
                "operator": operator, "with_stats": with_stats, "lr": float(self.cell_lr[cell]),
                "stats_e": stats_e, "stats_d": stats_d,
                "order": self.rng.permutation(self.data.train.shape[0])}

    def train_cell(self, ctx: dict) -> None:
        """Step 4: one epoch of training of the work pair (on ``config.device``)."""
        self.train_cells([ctx])

    def train_cells(self, ctxs: list) -> None:
        """Step 4 for several cells whose work pairs are consecutive work rows,
        in one call of the device's kernels."""
        c = self.config
        t0 = time.perf_counter()
        lo = ctxs[0]["row"]
        rows = range(lo, lo + len(ctxs))
        assert [x["row"] for x in ctxs] == list(rows)
        with_stats = any(x["with_stats"] for x in ctxs)
        if len(ctxs) == 1:
            se, sd = ctxs[0]["stats_e"][None], ctxs[0]["stats_d"][None]
        else:
            se, sd = self._sync_stats_e[lo:lo + len(ctxs)], self._sync_stats_d[lo:lo + len(ctxs)]
        self.backend.train(self.work_e, self.work_d, rows, self.data.train,
                           np.stack([x["order"] for x in ctxs]), [x["lr"] for x in ctxs],
                           c.batch_size, adam_config(c), (se, sd), with_stats)
        self.train_seconds += time.perf_counter() - t0

    def finish_cell(self, ctx: dict) -> dict:
        """Steps 5-6: evaluate, maybe prune, replace the centre, mutate the lr."""
        c = self.config
        E, D, we, wd, wi = self.encoders, self.decoders, self.work_e, self.work_d, ctx["row"]
        cell, operator = ctx["cell"], ctx["operator"]
        self.steps += self._steps_per_epoch
        batch = self._batch()
        replacement = float(self.backend.evaluate(we.params[wi:wi + 1], we.table,
                                                  wd.params[wi:wi + 1], wd.table, batch)[0])
        pruned = 0
        if operator != "none":
            n = 2 * c.radius + 1
            p = probability(c.schedule, c.prune_probability, self.epoch, c.final_epoch(), n)
            if p > self.rng.random():
                pruned = prune_event(c, operator, we, wd, wi, wi, self.rng, self.data,
                                     ctx["stats_e"], ctx["stats_d"], self.backend)
        moments = c.adam != "fresh"
        E.copy_row(cell, wi, source=we, moments=moments)
        D.copy_row(cell, wi, source=wd, moments=moments)
        self.cell_lr[cell] = mutate_lr(self.cell_lr[cell], c.lr_sigma, self.rng)
        return {"selection_loss": ctx["selection_loss"], "replacement_loss": replacement,
                "lr": float(self.cell_lr[cell]),
                "preserved": preserved_total(E, D, cell, cell, c.regrowth), "pruned": pruned}

    def step_cell(self, cell: int) -> dict:
        """Run steps 1-6 for one cell; return its record."""
        ctx = self.begin_cell(cell)
        self.train_cell(ctx)
        return self.finish_cell(ctx)

    def run_epoch(self) -> None:
        """Visit every cell once in the current order, record, reshuffle."""
        for ctxs in self.epoch_steps():
            self.train_cells(ctxs)

    def epoch_steps(self):
        """One epoch as a generator of training requests.

        It yields the list of work contexts (from :meth:`begin_cell`) to train
        next, and expects them trained (``ctx["row"]`` of ``work_e`` /
        ``work_d`` for one epoch at ``ctx["lr"]`` in ``ctx["order"]``) before it
        is resumed: :meth:`run_epoch` trains them here, a lockstep sweep
        (:mod:`sparseae.lockstep`) trains the requests of many runs together.

        Without ``sync_cells`` it yields one cell at a time, in the visiting
        order.  With ``sync_cells`` every cell first selects from the centres
        as they were at the start of the epoch, all selected pairs train in
        one request, then the cells finish in the visiting order.
        """
        t0 = time.perf_counter()
        rec = self.begin_epoch()
        if self.config.sync_cells:
            self._ensure_sync_work()
            ctxs = [self.begin_cell(int(cell), row=j) for j, cell in enumerate(self.order)]
            yield ctxs
            for ctx in ctxs:
                self.record(rec, ctx["cell"], self.finish_cell(ctx))
        else:
            for cell in self.order:
                ctx = self.begin_cell(int(cell))
                yield [ctx]
                self.record(rec, int(cell), self.finish_cell(ctx))
        self.end_epoch(rec, time.perf_counter() - t0)

    @property
    def work_rows(self) -> int:
        """Work rows this run trains per request: N with ``sync_cells``, else 1."""
        return self.n_cells if self.config.sync_cells else 1

    def bind_work(self, enc: Arena, dec: Arena, stats_e: np.ndarray,
                  stats_d: np.ndarray) -> None:
        """Use ``enc``/``dec`` (:attr:`work_rows` rows, e.g. views into a
        lockstep group's arenas) and the statistics arrays ``(work_rows,
        units, 3)`` as this run's work space."""
        self.work_e, self.work_d = enc, dec
        if self.config.sync_cells:
            self._sync_stats_e, self._sync_stats_d = stats_e, stats_d
        else:
            self._stats_e, self._stats_d = stats_e[0], stats_d[0]

    def _ensure_sync_work(self) -> None:
        N = self.n_cells
        if self.work_e.population != N:
            self.work_e = Arena(self.arch.encoder_shapes(), N)
            self.work_d = Arena(self.arch.decoder_shapes(), N)
            self._sync_stats_e = np.zeros((N, self.encoders.n_units, 3))
            self._sync_stats_d = np.zeros((N, self.decoders.n_units, 3))

    def begin_epoch(self) -> dict:
        return {k: np.zeros(self.n_cells) for k in CELL_SERIES}

    @staticmethod
    def record(rec: dict, cell: int, r: dict) -> None:
        for k in CELL_SERIES:
            rec[k][cell] = r[k]

    def end_epoch(self, rec: dict, seconds: float) -> None:
        """Record the epoch's cell and population series, reshuffle the order."""
        t0 = time.perf_counter()
        N = self.n_cells
        for k in CELL_SERIES:
            self.history[k].append(rec[k])
        h = self.history
        E, D = self.encoders, self.decoders
        h["best_replacement_loss"].append(float(rec["replacement_loss"].min()))
        h["diversity_encoder"].append(_mean_pairwise_l2(E.params))
        h["diversity_decoder"].append(_mean_pairwise_l2(D.params))
        h["jaccard_encoder"].append(_mean_jaccard(E.mask))
        h["jaccard_decoder"].append(_mean_jaccard(D.mask))
        if self.config.regrowth:
            h["preserved_encoder"].append(float(1 - np.maximum(E.zeros, 0).mean() / E.n))
            h["preserved_decoder"].append(float(1 - np.maximum(D.zeros, 0).mean() / D.n))
        else:
            h["preserved_encoder"].append(float(E.mask.mean()))
            h["preserved_decoder"].append(float(D.mask.mean()))
        if figure_epoch(self.epoch):
            h["figure_epoch"].append(self.epoch)
            h["mean_l1"].append(float(np.mean(self.backend.evaluate(
                E.params, E.table, D.params, D.table, self.data.train))))
        self.order = self.rng.permutation(N)
        self.epoch += 1
        self.seconds += seconds + time.perf_counter() - t0

    def run(self, callback=None, stop=None) -> dict:
        """Train the remaining epochs (``callback(run)`` after each; stop
        between epochs once ``stop.is_set()``) and return :meth:`summary`."""
        from sparseae.kernels import cpu

        self.compile_seconds = cpu.prepare()
        while self.epoch < self.config.epochs and not (stop is not None and stop.is_set()):
            self.run_epoch()
            if callback is not None:
                callback(self)
        return self.summary()

    # --------------------------------------------------------------- results

    def centre(self, cell: int) -> Autoencoder:
        """A copy of cell ``cell``'s centre as an :class:`Autoencoder`."""
        m = Autoencoder(self.arch)
        m.encoder.copy_row(0, cell, source=self.encoders)
        m.decoder.copy_row(0, cell, source=self.decoders)
        return m

    def centre_metrics(self) -> list:
        return [pair_metrics(self.centre(k), self.data, self.config.regrowth, self.backend)
                for k in range(self.n_cells)]

    def summary(self) -> dict:
        """The best centre's metrics (lowest test L1), every centre's test L1
        and preserved fraction, and the result per operator."""
        per = self.centre_metrics()
        best = int(np.argmin([m["test_l1"] for m in per]))
        out = {"paradigm": "lipi", "arch": str(self.arch), "operator": self.config.operator,
               "schedule": self.config.schedule, "population": self.n_cells,
               "radius": self.config.radius, "best_cell": best}
        out.update(per[best])
        by_op = {}
        for k, op in enumerate(self.operators):
            by_op.setdefault(op, []).append(k)
        out["per_operator"] = {
            op: {"cells": cells,
                 "best_test_l1": min(per[k]["test_l1"] for k in cells),
                 "median_test_l1": float(np.median([per[k]["test_l1"] for k in cells])),
                 "median_preserved": float(np.median([per[k]["preserved"] for k in cells]))}
            for op, cells in by_op.items()}
        out["centres_test_l1"] = [m["test_l1"] for m in per]
        out["centres_preserved"] = [m["preserved"] for m in per]
        out["mean_l1"] = float(np.mean([m["train_l1"] for m in per]))
        out.update({
            "epochs": self.epoch,
            "seconds": self.seconds,
            "seconds_per_epoch": self.seconds / max(1, self.epoch),
            "train_seconds": self.train_seconds,
            "us_per_step": 1e6 * self.train_seconds / max(1, self.steps),
            "compile_seconds": getattr(self, "compile_seconds", 0.0),
        })
        return out

    # ------------------------------------------------------------ checkpoints

    def to_checkpoint(self) -> ckpt_io.Checkpoint:
        state = {
            "epoch": self.epoch,
            "rng": self.rng.bit_generator.state,
            "train_seconds": self.train_seconds,
            "seconds": self.seconds,
            "steps": self.steps,
            "arch": list(self.arch.sizes),
            "data_sha256": run_fingerprint(self),
        }
        N = self.n_cells
        history = {k: np.asarray(v, np.float64).reshape(len(v), N) if k in CELL_SERIES
                   else np.asarray(v, np.float64) for k, v in self.history.items()}
        return ckpt_io.Checkpoint(
            kind="population", config=self.config.to_dict(), state=state,
            arenas={"encoder": self.encoders.arrays(), "decoder": self.decoders.arrays()},
            history=history, extra={"cell_lr": self.cell_lr, "order": self.order})

    def save(self, path) -> None:
        """Write the whole population state to an HDF5 checkpoint (atomically)."""
        save_run(self, path)

    @classmethod
    def from_checkpoint(cls, path, data: Dataset | None = None, epochs: int | None = None,
                        ck: ckpt_io.Checkpoint | None = None, keep_schedule: bool = False):
        """Resume a population run; it ends bit-identical to the uninterrupted
        run (unless ``epochs`` changes the total, which changes T)."""
        ck, config = read_checkpoint(path, _RESUME_KEYS, ck, kind="population")
        config, data = resume_config(ck, path, config, data, epochs, keep_schedule)
        run = cls(config, data)
        check_same_run(run, ck, path)
        restore_arenas(run.encoders, run.decoders, ck, path)
        run.cell_lr[...] = ck.extra["cell_lr"]
        run.order[...] = ck.extra["order"]
        run.rng.bit_generator.state = ck.state["rng"]
        run.epoch = int(ck.state["epoch"])
        run.train_seconds = float(ck.state["train_seconds"])
        run.seconds = float(ck.state["seconds"])
        run.steps = int(ck.state["steps"])
        run.history = {k: ([np.asarray(r, np.float64) for r in ck.history[k]] if k in CELL_SERIES
                           else [int(x) for x in ck.history[k]] if k == "figure_epoch"
                           else [float(x) for x in ck.history[k]])
                       for k in CELL_SERIES + POP_SERIES + FIGURE_SERIES}
        return run

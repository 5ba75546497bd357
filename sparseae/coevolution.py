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

Every cell draws from its own Generator, seeded each epoch from the run's, so
its draws do not depend on what other cells drew.  That lets cells that do not
see each other train at once without changing any result: an epoch runs as
waves (:func:`sparseae.ring.waves`), the cells of a wave select one by one,
train in one call (numba's parallel loop over the cores; one launch on a GPU)
and finish one by one.  With radius 1 and 10 cells an epoch averages about
3.7 waves; the result is bit-identical to visiting the cells one at a time
(``waves = False``, as a lockstep sweep does).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from sparseae.config import TrainConfig
from sparseae.density import density_event
from sparseae.errors import ConfigError
from sparseae.evaluation import best_centre, centre, population_metrics
from sparseae.backend import EVAL_CHUNK
from sparseae.metrics import figure_epoch, mean_distance, mean_overlap, preserved_total
from sparseae.model import Arena, Autoencoder
from sparseae.operators import prune_event
from sparseae.ring import best_case_fitness, mutate_lr, neighbourhood, tournament, waves
from sparseae.run import Run
from sparseae.schedules import probability

#: Per-cell history series, each an (epochs, N) array in the checkpoint.
CELL_SERIES = ("selection_loss", "replacement_loss", "lr", "preserved", "pruned")
#: Population series, one value per epoch.
POP_SERIES = ("best_replacement_loss", "diversity_encoder", "diversity_decoder",
              "jaccard_encoder", "jaccard_decoder", "preserved_encoder", "preserved_decoder")
#: The figures' metric: epochs at which it was recorded, and the mean over centres of
#: their training-set L1 ("mean_L1" of the paper's figures).
FIGURE_SERIES = ("figure_epoch", "mean_l1")


class LipiRun(Run):
    """The state of one Lipi-AE-S run; :meth:`run` trains it to the end.

    Attributes
    ----------
    encoders, decoders : Arena with one row per cell (the centres).
    cell_lr : float64 ``(N,)`` learning rate of each cell.
    order : int64 ``(N,)`` visiting order of the next epoch.
    operators : operator name of each cell.
    rng : the run's Generator (init, visiting order, the seeds of the cells'
        Generators, which draw the batches, tournaments, training orders,
        pruning and lr mutations).
    history : per-cell series (lists of length-N arrays) and population series.
    """

    paradigm = "lipi"
    kind = "population"
    timing_keys = ("train_seconds", "seconds")
    #: train the cells of a wave together (False: one cell per training request,
    #: as a lockstep group needs; the results are the same)
    waves = True

    @classmethod
    def check_paradigm(cls, config: TrainConfig) -> TrainConfig:
        if config.paradigm != "lipi":
            raise ConfigError(f"paradigm: LipiRun needs paradigm lipi, got {config.paradigm!r}")
        return config

    def init_state(self) -> None:
        N = self.config.population
        self.encoders = Arena(self.arch.encoder_shapes(), N)
        self.decoders = Arena(self.arch.decoder_shapes(), N)
        for k in range(N):  # cell by cell, encoder then decoder, as Autoencoder(seed=rng) draws
            self.encoders.init(self.rng, [k])
            self.decoders.init(self.rng, [k])
        self.cell_lr = np.full(N, float(self.config.lr))
        self.order = np.arange(N, dtype=np.int64)
        self.operators = self.config.cell_operators()
        self.history = {k: [] for k in CELL_SERIES + POP_SERIES + FIGURE_SERIES}
        self._work = None  # (work_e, work_d, stats_e, stats_d): allocated on first use

    @property
    def n_cells(self) -> int:
        return self.config.population

    # ------------------------------------------------------------------ work rows

    @property
    def work_rows(self) -> int:
        """Work rows this run trains per request: N with ``sync_cells`` or waves, else 1."""
        return self.n_cells if (self.config.sync_cells or self.waves) else 1

    def work(self) -> tuple:
        if self._work is None or self._work[0].population < self.work_rows:
            # first use, or ``waves`` switched on after one-row work space was made
            W = self.work_rows
            self._work = (Arena(self.arch.encoder_shapes(), W),
                          Arena(self.arch.decoder_shapes(), W),
                          np.zeros((W, self.encoders.n_units, 3)),
                          np.zeros((W, self.decoders.n_units, 3)))
        return self._work

    def bind_work(self, enc: Arena, dec: Arena, stats_e: np.ndarray,
                  stats_d: np.ndarray) -> None:
        self._work = (enc, dec, stats_e, stats_d)

    def halves(self) -> tuple:
        return self.encoders, self.decoders

    def bind_centres(self, enc: Arena, dec: Arena) -> None:
        enc.copy_row(slice(None), slice(None), source=self.encoders)
        dec.copy_row(slice(None), slice(None), source=self.decoders)
        self.encoders, self.decoders = enc, dec

    # ------------------------------------------------------------------ one cell

    def _batch(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of one training batch (without replacement)."""
        n = self.data.train.shape[0]
        return rng.choice(n, self.config.batch_size, replace=False)

    def cell_rngs(self) -> list:
        """One Generator per cell for this epoch, seeded from the run's Generator."""
        seeds = self.rng.integers(0, 2**63, self.n_cells)
        return [np.random.default_rng(int(s)) for s in seeds]

    def begin_cell(self, cell: int, rng: np.random.Generator, row: int = 0):
        """Steps 1-3 for one cell (a generator: it yields the all-pairs request):
        neighbourhood, all-pairs L1, tournament, drawing from the cell's ``rng``;
        the winning pair is copied to work row ``row``; returns the training
        request."""
        c = self.config
        E, D = self.encoders, self.decoders
        we, wd, stats_e, stats_d = self.work()
        idx = neighbourhood(cell, self.n_cells, c.radius)
        batch = self._batch(rng)
        req = {"kind": "pairs", "arena": "centres", "enc": idx, "dec": idx, "rows": batch,
               "chunk": len(batch)}
        yield [req]
        fitness = best_case_fitness(req["result"])
        win = tournament(fitness, rng)
        src = int(idx[win])
        moments = c.adam != "fresh"  # a fresh Adam's moments are 0 in every row
        we.copy_row(row, src, source=E, moments=moments)
        wd.copy_row(row, src, source=D, moments=moments)
        operator = self.operators[cell]
        with_stats = operator == "variance"
        if with_stats:
            stats_e[row] = 0.0
            stats_d[row] = 0.0
        return {"kind": "train", "cell": cell, "row": row, "rng": rng,
                "selection_loss": float(fitness[win]),
                "operator": operator, "with_stats": with_stats, "lr": float(self.cell_lr[cell]),
                "order": rng.permutation(self.data.train.shape[0])}

    def finish_cell(self, ctx: dict):
        """Steps 5-6 (a generator: it yields the replacement's evaluation):
        evaluate, maybe prune, replace the centre, mutate the lr; returns the
        cell's record."""
        c = self.config
        E, D = self.encoders, self.decoders
        we, wd, stats_e, stats_d = self.work()
        wi, cell, operator, rng = ctx["row"], ctx["cell"], ctx["operator"], ctx["rng"]
        self.steps += self._steps_per_epoch
        batch = self._batch(rng)
        req = {"kind": "pairs", "arena": "work", "enc": [wi], "dec": [wi], "rows": batch,
               "chunk": len(batch)}
        yield [req]
        replacement = float(req["result"][0, 0])
        pruned = 0
        if operator != "none" and c.target_density is not None:
            pruned = density_event(c, operator, we, wd, wi, wi, rng, self.data,
                                   stats_e[wi], stats_d[wi], self.epoch, self.backend)
        elif operator != "none":
            n = 2 * c.radius + 1
            p = probability(c.schedule, c.p0(operator), self.epoch, c.final_epoch(), n)
            if p > rng.random():
                pruned = prune_event(c, operator, we, wd, wi, wi, rng, self.data,
                                     stats_e[wi], stats_d[wi], self.backend)
        moments = c.adam != "fresh"
        E.copy_row(cell, wi, source=we, moments=moments)
        D.copy_row(cell, wi, source=wd, moments=moments)
        self.cell_lr[cell] = mutate_lr(self.cell_lr[cell], c.lr_sigma, rng)
        return {"selection_loss": ctx["selection_loss"], "replacement_loss": replacement,
                "lr": float(self.cell_lr[cell]),
                "preserved": preserved_total(E, D, cell, cell, c.regrowth), "pruned": pruned}

    def step_cell(self, cell: int) -> dict:
        """Run steps 1-6 for one cell here (its Generator drawn from the run's);
        return its record."""
        return _here(self, self._cell_steps(cell, self.cell_rngs()[cell]))

    def _cell_steps(self, cell: int, rng: np.random.Generator):
        ctx = yield from self.begin_cell(cell, rng)
        yield [ctx]
        return (yield from self.finish_cell(ctx))

    # ------------------------------------------------------------------ one epoch

    def epoch_steps(self):
        """One epoch as a generator of training requests (:class:`sparseae.run.Run`).

        Every cell gets its Generator (:meth:`cell_rngs`).  The cells go in
        waves (:func:`sparseae.ring.waves`; one cell each with ``waves``
        False): the cells of a wave select one by one in the visiting order,
        train in one request, then finish one by one.  With ``sync_cells`` the
        whole epoch is one wave: every cell selects from the centres as they
        were at the start of the epoch.
        """
        t0 = time.perf_counter()
        rec = {k: np.zeros(self.n_cells) for k in CELL_SERIES}
        rngs = self.cell_rngs()
        if self.config.sync_cells:
            plan = [[int(c) for c in self.order]]
        elif self.waves and (self.config.device != "cpu" or numba.get_num_threads() > 1):
            # on one CPU thread a wave's rows train one after another anyway
            plan = waves(self.order, self.n_cells, self.config.radius)
        else:
            plan = [[int(c)] for c in self.order]
        for wave in plan:
            ctxs = []
            for j, cell in enumerate(wave):
                ctxs.append((yield from self.begin_cell(cell, rngs[cell], row=j)))
            yield ctxs
            for ctx in ctxs:
                self._record(rec, ctx["cell"], (yield from self.finish_cell(ctx)))
        yield from self.end_epoch(rec)
        self.seconds += time.perf_counter() - t0

    @staticmethod
    def _record(rec: dict, cell: int, r: dict) -> None:
        for k in CELL_SERIES:
            rec[k][cell] = r[k]

    def end_epoch(self, rec: dict):
        """Record the epoch's cell and population series, reshuffle the order (a
        generator: it yields the population statistics' request and, on the
        figures' epochs, the centres' evaluation on the training split)."""
        for k in CELL_SERIES:
            self.history[k].append(rec[k])
        h = self.history
        E, D = self.encoders, self.decoders
        h["best_replacement_loss"].append(float(rec["replacement_loss"].min()))
        req = {"kind": "population"}
        yield [req]
        d2_e, ov_e, d2_d, ov_d = req["result"]
        h["diversity_encoder"].append(mean_distance(d2_e))
        h["diversity_decoder"].append(mean_distance(d2_d))
        h["jaccard_encoder"].append(mean_overlap(ov_e))
        h["jaccard_decoder"].append(mean_overlap(ov_d))
        if self.config.regrowth:
            h["preserved_encoder"].append(float(1 - np.maximum(E.zeros, 0).mean() / E.n))
            h["preserved_decoder"].append(float(1 - np.maximum(D.zeros, 0).mean() / D.n))
        else:
            h["preserved_encoder"].append(float(E.mask.mean()))
            h["preserved_decoder"].append(float(D.mask.mean()))
        if figure_epoch(self.epoch):
            rows = np.arange(self.data.train.shape[0])
            reqs = [{"kind": "pairs", "arena": "centres", "enc": [k], "dec": [k], "rows": rows,
                     "chunk": EVAL_CHUNK} for k in range(self.n_cells)]
            yield reqs
            h["figure_epoch"].append(self.epoch)
            h["mean_l1"].append(float(np.mean([r["result"][0, 0] for r in reqs])))
        self.order = self.rng.permutation(self.n_cells)
        self.epoch += 1

    # --------------------------------------------------------------- results

    def centre(self, cell: int) -> Autoencoder:
        """A copy of cell ``cell``'s centre as an :class:`Autoencoder`."""
        return centre(self.encoders, self.decoders, cell, self.arch)

    def centre_metrics(self) -> list:
        return population_metrics(self.encoders, self.decoders, self.arch, self.data,
                                  self.config.regrowth, self.backend)

    def summary(self) -> dict:
        """The best centre's metrics (lowest test L1), every centre's test L1
        and preserved fraction, and the result per operator."""
        per = self.centre_metrics()
        out = {"paradigm": "lipi", "arch": str(self.arch), "operator": self.config.operator,
               "schedule": self.config.schedule, "population": self.n_cells,
               "radius": self.config.radius}
        best = best_centre(per)
        centres = {k: best.pop(k) for k in ("centres_test_l1", "centres_preserved")}
        out.update(best)
        by_op = {}
        for k, op in enumerate(self.operators):
            by_op.setdefault(op, []).append(k)
        out["per_operator"] = {
            op: {"cells": cells,
                 "best_test_l1": min(per[k]["test_l1"] for k in cells),
                 "median_test_l1": float(np.median([per[k]["test_l1"] for k in cells])),
                 "median_preserved": float(np.median([per[k]["preserved"] for k in cells]))}
            for op, cells in by_op.items()}
        out.update(centres)
        out["mean_l1"] = float(np.mean([m["train_l1"] for m in per]))
        out["epochs"] = self.epoch
        out["seconds"] = self.seconds
        out["seconds_per_epoch"] = self.seconds / max(1, self.epoch)
        out.update(self.timing())
        out.update(self.final_summary())
        return out

    # ------------------------------------------------------------ checkpoints

    def checkpoint_parts(self) -> dict:
        N = self.n_cells
        history = {k: np.asarray(v, np.float64).reshape(len(v), N) if k in CELL_SERIES
                   else np.asarray(v, np.float64) for k, v in self.history.items()}
        return {"history": history, "extra": {"cell_lr": self.cell_lr, "order": self.order}}

    def restore(self, ck, path) -> None:
        from sparseae.errors import CheckpointError

        if "cell_lr" not in ck.extra or "order" not in ck.extra:
            raise CheckpointError(f"checkpoint: {path} lacks the cells' lr and visiting order")
        self.cell_lr[...] = ck.extra["cell_lr"]
        self.order[...] = ck.extra["order"]
        self.history = {k: ([np.asarray(r, np.float64) for r in ck.history[k]] if k in CELL_SERIES
                            else [int(x) for x in ck.history[k]] if k == "figure_epoch"
                            else [float(x) for x in ck.history[k]])
                        for k in CELL_SERIES + POP_SERIES + FIGURE_SERIES}


def _here(run: Run, steps):
    """Carry out the requests of generator ``steps`` on ``run``; return its value."""
    try:
        reqs = next(steps)
        while True:
            run.fulfil(reqs)
            reqs = next(steps)
    except StopIteration as stop:
        return stop.value

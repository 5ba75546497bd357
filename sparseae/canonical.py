"""Canonical autoencoder training (ALGORITHM.md section 5, "Canonical").

One autoencoder, Adam kept for the whole run, step decay of the learning rate,
each epoch a shuffle and one compiled call that runs all its batches, then
maybe a pruning event.  The Python loop here is over epochs only; the run
protocol (training calls, resume, timing) is :class:`sparseae.run.Run`'s.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from sparseae.config import TrainConfig
from sparseae.density import density_event
from sparseae.evaluation import model_l1, pair_metrics
from sparseae.metrics import figure_epoch, preserved_total
from sparseae.model import Autoencoder
from sparseae.operators import prune_event
from sparseae.run import Run
from sparseae.schedules import probability

#: The per-epoch series of a canonical run's history.
SERIES = ("train_loss", "lr", "pruned", "preserved", "figure_epoch", "mean_l1")


class CanonicalRun(Run):
    """The state of one canonical run; :meth:`run` trains it to the end.

    Parameters
    ----------
    config : TrainConfig (validated here).
    data : Dataset or None (the config's data file, or generated data).

    Attributes
    ----------
    model : Autoencoder, trained in place.
    rng : the run's numpy Generator: init, then per epoch the shuffle, the
        pruning draw and the operator's own draws.
    history : per-epoch lists ``train_loss`` (mean batch L1), ``lr``,
        ``pruned`` (entries pruned after that epoch) and ``preserved``, and the
        figures' metric (``figure_epoch``, ``mean_l1``).

    Notes
    -----
    ALGORITHM.md section 5; pruning (sections 3-4) once per epoch after
    training when ``p(t) > U(0, 1)``, with T = epochs (canonical convention).
    """

    paradigm = "canonical"
    kind = "canonical"
    timing_keys = ("train_seconds", "prune_seconds")

    @classmethod
    def check_paradigm(cls, config: TrainConfig) -> TrainConfig:
        # the class decides the paradigm
        return config if config.paradigm == "canonical" else \
            dataclasses.replace(config, paradigm="canonical")

    def init_state(self) -> None:
        self.model = Autoencoder(self.arch, seed=self.rng)
        self.history = {k: [] for k in SERIES}
        enc, dec = self.model.encoder, self.model.decoder
        self._stats_e = np.zeros((1, enc.n_units, 3))
        self._stats_d = np.zeros((1, dec.n_units, 3))

    def run_epoch(self) -> float:
        """Train one epoch, then maybe prune; return the epoch's mean batch L1."""
        super().run_epoch()
        return self.history["train_loss"][-1]

    def epoch_steps(self):
        """One epoch: one request for row 0 (the model), then pruning and records."""
        ctx = self.begin_epoch()
        yield [ctx]
        self.finish_epoch(ctx, ctx["loss"])

    def work(self) -> tuple:
        return self.model.encoder, self.model.decoder, self._stats_e, self._stats_d

    def halves(self) -> tuple:
        return self.model.encoder, self.model.decoder

    def bind_work(self, enc, dec, stats_e: np.ndarray, stats_d: np.ndarray) -> None:
        """Move the model into ``enc``/``dec`` (one row each)."""
        enc.copy_row(0, 0, source=self.model.encoder)
        dec.copy_row(0, 0, source=self.model.decoder)
        self.model.encoder, self.model.decoder = enc, dec
        self._stats_e, self._stats_d = stats_e, stats_d

    def begin_epoch(self) -> dict:
        """The epoch's lr and batch order (drawn from the run's Generator)."""
        c = self.config
        with_stats = c.operator == "variance"
        if with_stats:
            self._stats_e[...] = 0.0
            self._stats_d[...] = 0.0
        return {"kind": "train", "row": 0, "lr": c.lr_at(self.epoch), "with_stats": with_stats,
                "order": self.rng.permutation(self.data.train.shape[0])}

    def finish_epoch(self, ctx: dict, loss: float) -> float:
        """Maybe prune, record the epoch; return ``loss``."""
        c = self.config
        e, d = self.model.encoder, self.model.decoder
        t1 = time.perf_counter()
        pruned = self._maybe_prune()
        self.prune_seconds += time.perf_counter() - t1
        self.steps += self._steps_per_epoch
        h = self.history
        h["train_loss"].append(float(loss))
        h["lr"].append(ctx["lr"])
        h["pruned"].append(pruned)
        h["preserved"].append(preserved_total(e, d, zeros=c.regrowth))
        if figure_epoch(self.epoch):
            h["figure_epoch"].append(self.epoch)
            h["mean_l1"].append(model_l1(self.model, self.data.train, self.backend))
        self.epoch += 1
        return float(loss)

    def _maybe_prune(self) -> int:
        c = self.config
        if c.operator == "none":
            return 0
        if c.target_density is not None:
            return density_event(c, c.operator, self.model.encoder, self.model.decoder, 0, 0,
                                 self.rng, self.data, self._stats_e[0], self._stats_d[0],
                                 self.epoch, self.backend)
        p = probability(c.schedule, c.p0(c.operator), self.epoch, c.final_epoch(), 1)
        if not p > self.rng.random():
            return 0
        return prune_event(c, c.operator, self.model.encoder, self.model.decoder, 0, 0,
                           self.rng, self.data, self._stats_e[0], self._stats_d[0], self.backend)

    def summary(self) -> dict:
        """Final metrics (``sparseae eval`` reports the same keys)."""
        out = {"paradigm": "canonical", "arch": str(self.arch), "operator": self.config.operator,
               "schedule": self.config.schedule}
        out.update(pair_metrics(self.model, self.data, self.config.regrowth, self.backend))
        out["mean_l1"] = out["train_l1"]
        out["epochs"] = self.epoch
        out["seconds"] = getattr(self, "_wall", self.train_seconds + self.prune_seconds)
        out.update(self.timing())
        out.update(self.final_summary())
        return out

    def checkpoint_parts(self) -> dict:
        return {"history": self.history}

    def restore(self, ck, path) -> None:
        self.history = {k: [int(x) if k in ("pruned", "figure_epoch") else float(x) for x in v]
                        for k, v in ck.history.items()}

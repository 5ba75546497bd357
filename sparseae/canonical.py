"""Canonical autoencoder training (ALGORITHM.md section 5, "Canonical").

One autoencoder, Adam kept for the whole run, step decay of the learning rate,
each epoch a shuffle and one compiled call that runs all its batches.  The
Python loop here is over epochs only.
"""

from __future__ import annotations

import time

import numpy as np

from sparseae.config import TrainConfig
from sparseae.data import Dataset, binary_clustering
from sparseae.errors import ConfigError, DataError
from sparseae.model import PRESETS, Architecture, Autoencoder


def make_data(config: TrainConfig) -> Dataset:
    """The generated binary-clustering data a config describes."""
    seed = config.seed if config.data_seed is None else config.data_seed
    return binary_clustering(config.clusters, config.dim, config.per_cluster, config.noise, seed)


def resolve_arch(config: TrainConfig, data: Dataset) -> Architecture:
    """The architecture for ``data``: a preset's input width follows the data;
    explicit widths must match it."""
    arch = Architecture.parse(config.arch)
    if config.arch in PRESETS:
        return arch.with_input_dim(data.dim)
    if arch.input_dim != data.dim:
        raise DataError(
            f"data: width {data.dim} does not match the architecture's input width "
            f"{arch.input_dim} (--arch {config.arch})"
        )
    return arch


def check_batch(config: TrainConfig, data: Dataset) -> None:
    if config.batch_size > data.train.shape[0]:
        raise ConfigError(
            f"batch_size: must be in [1, {data.train.shape[0]}] (the training split's size), "
            f"got {config.batch_size}"
        )


class CanonicalRun:
    """The state of one canonical run; :meth:`run` trains it to the end.

    Parameters
    ----------
    config : TrainConfig (validated here).
    data : Dataset or None (generate from the config).

    Attributes
    ----------
    model : Autoencoder, trained in place.
    rng : the run's numpy Generator (init, then one shuffle per epoch).
    epoch : epochs completed.
    history : per-epoch lists ``train_loss`` (mean batch L1) and ``lr``.
    """

    def __init__(self, config: TrainConfig, data: Dataset | None = None):
        self.config = config.validate()
        self.data = make_data(config) if data is None else data
        check_batch(config, self.data)
        self.arch = resolve_arch(config, self.data)
        self.rng = np.random.default_rng(config.seed)
        self.model = Autoencoder(self.arch, seed=self.rng)
        self.epoch = 0
        self.history = {"train_loss": [], "lr": []}
        self.train_seconds = 0.0
        self.steps = 0
        n = self.data.train.shape[0]
        self._steps_per_epoch = -(-n // config.batch_size)
        enc, dec = self.model.encoder, self.model.decoder
        self._stats_e = np.zeros((enc.n_units, 3))
        self._stats_d = np.zeros((dec.n_units, 3))

    def run_epoch(self) -> float:
        """Train one epoch; return its mean batch L1."""
        from sparseae.kernels import cpu

        c = self.config
        lr = c.lr_at(self.epoch)
        order = self.rng.permutation(self.data.train.shape[0])
        e, d = self.model.encoder, self.model.decoder
        t0 = time.perf_counter()
        loss = cpu.train_epoch(
            e.params[0], e.mask[0], e.m[0], e.v[0], e.step[0:1], e.table,
            d.params[0], d.mask[0], d.m[0], d.v[0], d.step[0:1], d.table,
            self.data.train, order, c.batch_size, lr, c.beta1, c.beta2, c.eps, False,
            self._stats_e, self._stats_d, False,
        )
        self.train_seconds += time.perf_counter() - t0
        self.steps += self._steps_per_epoch
        self.history["train_loss"].append(float(loss))
        self.history["lr"].append(lr)
        self.epoch += 1
        return float(loss)

    def run(self, callback=None) -> dict:
        """Train the remaining epochs; ``callback(run)`` after each; return :meth:`summary`."""
        from sparseae.kernels import cpu

        self.compile_seconds = cpu.prepare()
        t0 = time.perf_counter()
        while self.epoch < self.config.epochs:
            self.run_epoch()
            if callback is not None:
                callback(self)
        self._wall = time.perf_counter() - t0
        return self.summary()

    def summary(self) -> dict:
        """Final metrics: ``test_l1``, ``train_l1``, ``validation_l1``,
        ``parameters``, ``preserved``, ``epochs``, ``seconds``, ``us_per_step``."""
        m = self.model
        live = int(m.encoder.mask.sum()) + int(m.decoder.mask.sum())
        return {
            "paradigm": "canonical",
            "arch": str(self.arch),
            "test_l1": m.l1(self.data.test),
            "train_l1": m.l1(self.data.train),
            "validation_l1": m.l1(self.data.validation),
            "parameters": m.n_params,
            "preserved": live / m.n_params,
            "epochs": self.epoch,
            "seconds": getattr(self, "_wall", self.train_seconds),
            "train_seconds": self.train_seconds,
            "us_per_step": 1e6 * self.train_seconds / max(1, self.steps),
            "compile_seconds": getattr(self, "compile_seconds", 0.0),
            "final_train_loss": self.history["train_loss"][-1] if self.history["train_loss"] else None,
        }


def train(config: TrainConfig | None = None, data: Dataset | None = None, callback=None, **overrides):
    """Train canonically and return ``(model, summary, history)``.

    Examples
    --------
    >>> model, summary, history = sparseae.train(epochs=20, seed=1)  # doctest: +SKIP
    """
    config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    run = CanonicalRun(config, data)
    summary = run.run(callback)
    return run.model, summary, run.history

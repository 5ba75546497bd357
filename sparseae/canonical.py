"""Canonical autoencoder training (ALGORITHM.md section 5, "Canonical").

One autoencoder, Adam kept for the whole run, step decay of the learning rate,
each epoch a shuffle and one compiled call that runs all its batches.  The
Python loop here is over epochs only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np

from sparseae import checkpoint as ckpt_io
from sparseae._checks import check_run
from sparseae.config import TrainConfig
from sparseae.data import SPLITS, Dataset, binary_clustering, load
from sparseae.errors import CheckpointError, ConfigError, DataError
from sparseae.metrics import figure_epoch, flops, preserved, preserved_total
from sparseae.model import PRESETS, Architecture, Autoencoder
from sparseae.operators import prune_pair
from sparseae.schedules import probability


def make_data(config: TrainConfig) -> Dataset:
    """The data a config describes: its ``data`` file, or generated binary clustering."""
    if config.data is not None:
        return load(config.data)
    seed = config.seed if config.data_seed is None else config.data_seed
    return binary_clustering(config.clusters, config.dim, config.per_cluster, config.noise, seed,
                             quirks=config.data_quirks)


def fingerprint(data: Dataset) -> str:
    """SHA-256 of the three splits (shape, dtype and bytes): ties a checkpoint to its data."""
    h = hashlib.sha256()
    for name in SPLITS:
        arr = getattr(data, name)
        h.update(f"{name}{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def run_fingerprint(run) -> str:
    """:func:`fingerprint` of ``run.data``, computed once per run (the data never change)."""
    sha = getattr(run, "_data_sha256", None)
    if sha is None:
        sha = run._data_sha256 = fingerprint(run.data)
    return sha


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


def model_l1(model, X, backend=None) -> float:
    """``model.l1(X)``, computed by ``backend`` (a :class:`sparseae.backend.Backend`;
    default: the CPU, as ``model.l1`` does)."""
    if backend is None:
        return model.l1(X)
    e, d = model.encoder, model.decoder
    return float(backend.evaluate(e.params[:1], e.table, d.params[:1], d.table, X)[0])


def pair_metrics(model, data: Dataset, zeros: bool = False, backend=None) -> dict:
    """Test/validation/train L1 (evaluated by ``backend``, default the CPU),
    preserved fractions and FLOPs of a trained pair (``zeros``: the reference's
    preserved accounting, see :func:`preserved`)."""
    pres = preserved(model, zeros=zeros)
    fl = flops(model)
    return {
        "test_l1": model_l1(model, data.test, backend),
        "train_l1": model_l1(model, data.train, backend),
        "validation_l1": model_l1(model, data.validation, backend),
        "parameters": model.n_params,
        "preserved": pres["total"],
        "preserved_encoder": pres["encoder"],
        "preserved_decoder": pres["decoder"],
        "preserved_layers": dict(pres["layers"]),
        "flops": fl["masked"],
        "flops_dense": fl["dense"],
        "flops_compacted": fl["compacted"],
    }


def prune_event(config: TrainConfig, operator: str, enc, dec, ie: int, id_: int, rng,
                data: Dataset, stats_e, stats_d, backend=None) -> int:
    """One pruning event on encoder row ``ie`` and decoder row ``id_``.

    CONJUNCTIVE draws ``config.heldout`` samples of the validation split
    (without replacement when there are enough) and runs the fused marking
    pass (on ``backend``, default ``config.device``'s); VARIANCE uses the
    statistics of the epoch just trained.  Returns the number of entries newly
    pruned.
    """
    marks_e = marks_d = None
    if operator == "conjunctive":
        from sparseae import backend as be

        backend = be.get(config.device) if backend is None else backend
        k = config.heldout
        if config.heldout_source == "test_reference":
            src = data.test
            idx = rng.integers(1, max(2, src.shape[0]), k)
        else:
            src = data.validation
            idx = rng.choice(src.shape[0], k, replace=k > src.shape[0])
        marks_e, marks_d = backend.conjunctive(enc.params[ie], enc.table, dec.params[id_],
                                               dec.table, src[idx], config.threshold)
    c = config
    return prune_pair(operator, enc, dec, ie, id_, c.prune_amount, rng,
                      stats_e=stats_e, stats_d=stats_d, marks_e=marks_e, marks_d=marks_d,
                      structural=c.structural, output_bias=c.prune_output_bias,
                      regrowth=c.regrowth, random_scope=c.random_scope,
                      variance_direction=c.variance_direction, variance_draws=c.variance_draws)


class CanonicalRun:
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
    epoch : epochs completed.
    history : per-epoch lists ``train_loss`` (mean batch L1), ``lr``,
        ``pruned`` (entries pruned after that epoch) and ``preserved``.

    Notes
    -----
    ALGORITHM.md section 5; pruning (sections 3-4) once per epoch after
    training when ``p(t) > U(0, 1)``, with T = epochs (canonical convention).
    """

    def __init__(self, config: TrainConfig, data: Dataset | None = None):
        if config.paradigm != "canonical":  # the class decides the paradigm
            config = dataclasses.replace(config, paradigm="canonical")
        self.config = config.validate()
        self.data = make_data(config) if data is None else data
        check_batch(config, self.data)
        self.arch = resolve_arch(config, self.data)
        check_run(config, self.data, self.arch)
        from sparseae import backend

        self.backend = backend.get(config.device)  # fails now when the device is not usable
        self.rng = np.random.default_rng(config.seed)
        self.model = Autoencoder(self.arch, seed=self.rng)
        self.epoch = 0
        self.history = {"train_loss": [], "lr": [], "pruned": [], "preserved": [],
                        "figure_epoch": [], "mean_l1": []}
        self.train_seconds = 0.0
        self.prune_seconds = 0.0
        self.steps = 0
        n = self.data.train.shape[0]
        self._steps_per_epoch = -(-n // config.batch_size)
        enc, dec = self.model.encoder, self.model.decoder
        self._stats_e = np.zeros((enc.n_units, 3))
        self._stats_d = np.zeros((dec.n_units, 3))

    def run_epoch(self) -> float:
        """Train one epoch, then maybe prune; return the epoch's mean batch L1."""
        for (ctx,) in self.epoch_steps():
            t0 = time.perf_counter()
            ctx["loss"] = self.train(ctx)
            self.train_seconds += time.perf_counter() - t0
        return self.history["train_loss"][-1]

    def epoch_steps(self):
        """One epoch as a generator of training requests (the contract of
        :meth:`sparseae.coevolution.LipiRun.epoch_steps`): it yields ``[ctx]``
        and expects row 0 of the model trained and ``ctx["loss"]`` set."""
        ctx = self.begin_epoch()
        yield [ctx]
        self.finish_epoch(ctx, ctx["loss"])

    work_rows = 1

    def bind_work(self, enc, dec, stats_e: np.ndarray, stats_d: np.ndarray) -> None:
        """Move the model into ``enc``/``dec`` (one row each, e.g. views into a
        lockstep group's arenas) and use ``stats_e``/``stats_d`` ``(1, units,
        3)`` for the VARIANCE statistics."""
        enc.copy_row(0, 0, source=self.model.encoder)
        dec.copy_row(0, 0, source=self.model.decoder)
        self.model.encoder, self.model.decoder = enc, dec
        self._stats_e, self._stats_d = stats_e[0], stats_d[0]

    def begin_epoch(self) -> dict:
        """The epoch's lr and batch order (drawn from the run's Generator)."""
        c = self.config
        with_stats = c.operator == "variance"
        if with_stats:
            self._stats_e[...] = 0.0
            self._stats_d[...] = 0.0
        return {"row": 0, "lr": c.lr_at(self.epoch), "with_stats": with_stats,
                "order": self.rng.permutation(self.data.train.shape[0])}

    def train(self, ctx: dict) -> float:
        """One epoch of training on ``config.device``; returns the mean batch L1."""
        from sparseae.backend import adam_config

        c = self.config
        return float(self.backend.train(
            self.model.encoder, self.model.decoder, range(0, 1), self.data.train,
            ctx["order"][None], [ctx["lr"]], c.batch_size, adam_config(c),
            (self._stats_e[None], self._stats_d[None]), ctx["with_stats"])[0])

    def finish_epoch(self, ctx: dict, loss: float) -> float:
        """Maybe prune, record the epoch; return ``loss``."""
        c = self.config
        e, d = self.model.encoder, self.model.decoder
        t1 = time.perf_counter()
        pruned = self._maybe_prune()
        self.prune_seconds += time.perf_counter() - t1
        self.steps += self._steps_per_epoch
        self.history["train_loss"].append(float(loss))
        self.history["lr"].append(ctx["lr"])
        self.history["pruned"].append(pruned)
        self.history["preserved"].append(preserved_total(e, d, zeros=c.regrowth))
        if figure_epoch(self.epoch):
            self.history["figure_epoch"].append(self.epoch)
            self.history["mean_l1"].append(model_l1(self.model, self.data.train, self.backend))
        self.epoch += 1
        return float(loss)

    def _maybe_prune(self) -> int:
        c = self.config
        if c.operator == "none":
            return 0
        p = probability(c.schedule, c.prune_probability, self.epoch, c.final_epoch(), 1)
        if not p > self.rng.random():
            return 0
        return prune_event(c, c.operator, self.model.encoder, self.model.decoder, 0, 0,
                           self.rng, self.data, self._stats_e, self._stats_d, self.backend)

    def run(self, callback=None, stop=None) -> dict:
        """Train the remaining epochs and return :meth:`summary`.

        ``callback(run)`` is called after each epoch; training stops early,
        between epochs, once ``stop.is_set()`` (e.g. a ``threading.Event`` set
        by a SIGINT handler), leaving a consistent state to checkpoint.
        """
        from sparseae.kernels import cpu

        self.compile_seconds = cpu.prepare()
        t0 = time.perf_counter()
        while self.epoch < self.config.epochs and not (stop is not None and stop.is_set()):
            self.run_epoch()
            if callback is not None:
                callback(self)
        self._wall = time.perf_counter() - t0
        return self.summary()

    def summary(self) -> dict:
        """Final metrics (``sparseae eval`` reports the same keys)."""
        out = {"paradigm": "canonical", "arch": str(self.arch), "operator": self.config.operator,
               "schedule": self.config.schedule}
        out.update(pair_metrics(self.model, self.data, self.config.regrowth, self.backend))
        out["mean_l1"] = out["train_l1"]
        out.update({
            "epochs": self.epoch,
            "seconds": getattr(self, "_wall", self.train_seconds + self.prune_seconds),
            "train_seconds": self.train_seconds,
            "prune_seconds": self.prune_seconds,
            "us_per_step": 1e6 * self.train_seconds / max(1, self.steps),
            "compile_seconds": getattr(self, "compile_seconds", 0.0),
        })
        return out

    # ---------------------------------------------------------------- checkpoints

    def to_checkpoint(self) -> ckpt_io.Checkpoint:
        e, d = self.model.encoder, self.model.decoder
        state = {
            "epoch": self.epoch,
            "rng": self.rng.bit_generator.state,
            "train_seconds": self.train_seconds,
            "prune_seconds": self.prune_seconds,
            "steps": self.steps,
            "arch": list(self.arch.sizes),
            "data_sha256": run_fingerprint(self),
        }
        return ckpt_io.Checkpoint(kind="canonical", config=self.config.to_dict(), state=state,
                                  arenas={"encoder": e.arrays(), "decoder": d.arrays()},
                                  history=self.history)

    def save(self, path) -> None:
        """Write the whole run state to an HDF5 checkpoint (atomically)."""
        save_run(self, path)

    @classmethod
    def from_checkpoint(cls, path, data: Dataset | None = None, epochs: int | None = None,
                        ck: ckpt_io.Checkpoint | None = None, keep_schedule: bool = False):
        """Resume a run; it then ends bit-identical to the uninterrupted run.

        ``data`` must be the run's data (checked by fingerprint); None rebuilds
        it from the config.  ``epochs`` may extend the run; the run is then the
        one configured with the new total from here on (the lr decay step and
        the schedule's T follow the new total), so it is no longer identical
        to any uninterrupted run.
        """
        ck, config = read_checkpoint(path, _RESUME_KEYS, ck)
        config, data = resume_config(ck, path, config, data, epochs, keep_schedule)
        run = cls(config, data)
        check_same_run(run, ck, path)
        restore_arenas(run.model.encoder, run.model.decoder, ck, path)
        run.rng.bit_generator.state = ck.state["rng"]
        run.epoch = int(ck.state["epoch"])
        run.train_seconds = float(ck.state["train_seconds"])
        run.prune_seconds = float(ck.state["prune_seconds"])
        run.steps = int(ck.state["steps"])
        run.history = {k: [int(x) if k in ("pruned", "figure_epoch") else float(x) for x in v]
                       for k, v in ck.history.items()}
        return run


def evaluate_checkpoint(path, data: Dataset | None = None, ck=None, backend=None) -> dict:
    """Metrics of the model in a canonical checkpoint, on ``data`` (default:
    the run's own data, checked against the recorded hash).  Works on
    checkpoints from any epoch."""
    ck, config = read_checkpoint(path, _EVAL_KEYS, ck)
    if data is None:
        from sparseae.provenance import locate

        data, _ = locate(ck, path, config)
    try:
        model = Autoencoder(ck.state["arch"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint: {path} holds an invalid architecture ({exc})") from None
    if model.arch.input_dim != data.dim:
        raise DataError(f"data: width {data.dim} does not match the checkpoint's input width "
                        f"{model.arch.input_dim}")
    restore_arenas(model.encoder, model.decoder, ck, path)
    out = {"paradigm": "canonical", "arch": str(model.arch), "operator": config.operator,
           "schedule": config.schedule}
    out.update(pair_metrics(model, data, config.regrowth, backend))
    out["epochs"] = int(ck.state["epoch"])
    return out


_EVAL_KEYS = ("epoch", "arch")
_RESUME_KEYS = ("epoch", "rng", "train_seconds", "prune_seconds", "steps", "arch", "data_sha256")


def read_checkpoint(path, keys, ck=None, kind: str = "canonical"):
    """Load a checkpoint of ``kind`` and validate its config and the state ``keys``;
    return ``(checkpoint, config)``."""
    from sparseae.schema import check_checkpoint

    ck = ckpt_io.load(path) if ck is None else ck
    if ck.kind != kind:
        raise CheckpointError(f"checkpoint: {path} holds a {ck.kind} run, not a {kind} one")
    if not isinstance(ck.config, dict) or not isinstance(ck.state, dict):
        raise CheckpointError(f"checkpoint: {path} has a malformed config or state")
    try:
        config = TrainConfig.from_dict(ck.config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint: {path} holds an invalid config ({exc})") from None
    check_checkpoint(ck, path, config, keys, resume="rng" in keys)
    return ck, config


def save_run(run, path) -> None:
    """Write ``run.to_checkpoint()`` to ``path``, recording where its data file is."""
    from sparseae.provenance import data_path, state_paths

    ck = run.to_checkpoint()
    ck.state.update(state_paths(data_path(run.config), path))
    ckpt_io.save(path, ck)


def resume_config(ck, path, config: TrainConfig, data, epochs, keep_schedule=False):
    """The config and data a resumed run starts from.

    ``epochs`` is the new total (refused below the epochs done).  The lr decay
    step and the schedules' T then follow the new total, unless ``keep_schedule``
    keeps them at the checkpoint's (``schedule_epochs``).  The checkpoint's data
    are found again (:func:`sparseae.provenance.locate`) unless ``data`` is given.
    """
    done = int(ck.state["epoch"])
    if epochs is not None:
        if epochs < done:
            raise ConfigError(f"epochs: must be >= {done}, the epochs {path} has done "
                              f"(a run cannot be shortened), got {epochs}")
        if keep_schedule and config.schedule_epochs is None:
            config = config.replace(schedule_epochs=config.epochs)
        config = config.replace(epochs=epochs)
    if data is None:
        from sparseae.provenance import locate

        data, found = locate(ck, path, config)
        if found is not None and found != config.data:
            config = config.replace(data=found)
    return config, data


def check_same_run(run, ck, path) -> None:
    """Refuse to resume ``ck`` into ``run`` when the architecture or the data differ."""
    if list(run.arch.sizes) != list(ck.state["arch"]):
        raise CheckpointError(f"checkpoint: {path} is for architecture {ck.state['arch']}, "
                              f"not {list(run.arch.sizes)}")
    if run_fingerprint(run) != ck.state["data_sha256"]:
        raise CheckpointError(f"checkpoint: {path} was trained on other data than given")


def restore_arenas(encoder, decoder, ck, path) -> None:
    """Copy a checkpoint's arena arrays into ``encoder`` and ``decoder``, checking shapes."""
    for half, name in ((encoder, "encoder"), (decoder, "decoder")):
        for key, arr in ck.arenas[name].items():
            target = getattr(half, key)
            if arr.shape != target.shape:
                raise CheckpointError(f"checkpoint: {path} {name}/{key} has shape {arr.shape}, "
                                      f"expected {target.shape}")
            target[...] = arr

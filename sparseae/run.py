"""The run protocol both paradigms follow (:class:`Run`).

A run owns its config, data, architecture, backend (the device's kernels) and
one seeded Generator; it trains epoch by epoch, records a history, saves and
resumes through checkpoints.  :class:`~sparseae.canonical.CanonicalRun` and
:class:`~sparseae.coevolution.LipiRun` add only what differs: their state,
what one epoch does, their summary.

An epoch is a generator of requests (:meth:`Run.epoch_steps`): the run does
its own host work (selection, pruning decisions, replacement) with its own
Generator and yields a list of requests of one ``kind``, then expects them
carried out when it is resumed:

* ``train``: the work ``row``, the ``lr``, the batch ``order`` and
  ``with_stats``; sets ``loss``;
* ``pairs``: the L1 of encoder rows ``enc`` with decoder rows ``dec`` of the
  ``arena`` named (``centres`` or ``work``) on the training rows ``rows``,
  forwarded ``chunk`` at a time; sets ``result`` (``(len(enc), len(dec))``);
* ``population``: the pairwise distances and mask overlaps of the centres;
  sets ``result`` (``(d2_e, ov_e, d2_d, ov_d)``).

:meth:`Run.run_epoch` carries them out here, one backend call per kind and
shape; a lockstep sweep (:mod:`sparseae.lockstep`) binds many runs' arenas
into one group's (:meth:`Run.bind_work`, :meth:`Run.bind_centres`) and
carries out every run's requests of a step in one call per kind, on the
group's device.  The same kernels compute every request either way, so a
run's results are the same.
"""

from __future__ import annotations

import time

import numpy as np

from sparseae import checkpoint as ckpt_io
from sparseae._checks import check_run
from sparseae.backend import adam_config
from sparseae.config import TrainConfig
from sparseae.data import Dataset
from sparseae.inputs import make_data, resolve_arch, run_fingerprint
from sparseae.resume import check_same_run, read_checkpoint, restore_arenas, resume_config, save_run


class Run:
    """One training run (the base of both paradigms).

    Attributes
    ----------
    config : the validated TrainConfig.
    data : the Dataset it trains on.
    arch : its Architecture.
    backend : the :class:`sparseae.backend.Backend` of ``config.device``.
    rng : the run's numpy Generator: every random draw of the run.
    epoch : epochs completed.
    steps : training steps (batches) completed.
    train_seconds : time in training calls.
    history : per-epoch series (subclass-specific keys).
    """

    #: ``config.paradigm`` of this kind of run.
    paradigm = ""
    #: the checkpoint's ``kind``.
    kind = ""
    #: time counters saved in checkpoints (the first, ``train_seconds``, in both kinds).
    timing_keys = ("train_seconds",)
    #: work rows one training request occupies (lockstep).
    work_rows = 1

    def __init__(self, config: TrainConfig, data: Dataset | None = None):
        from sparseae import backend

        self.config = self.check_paradigm(config).validate()
        config = self.config
        self.data = make_data(config) if data is None else data
        self.arch = resolve_arch(config, self.data)
        check_run(config, self.data, self.arch)
        self.backend = backend.get(config.device)  # fails now when the device is not usable
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0
        self.steps = 0
        for key in self.timing_keys:
            setattr(self, key, 0.0)
        self.compile_seconds = 0.0
        self._steps_per_epoch = -(-self.data.train.shape[0] // config.batch_size)
        self.adam = adam_config(config)
        self.init_state()

    # ------------------------------------------------------------ per paradigm

    @classmethod
    def check_paradigm(cls, config: TrainConfig) -> TrainConfig:
        """The config this class trains (refuse or adapt another paradigm)."""
        return config

    def init_state(self) -> None:
        """Allocate and initialise the networks (drawing from ``rng``) and the history."""
        raise NotImplementedError

    def epoch_steps(self):
        """One epoch as a generator of training requests (module docstring)."""
        raise NotImplementedError

    def bind_work(self, enc, dec, stats_e: np.ndarray, stats_d: np.ndarray) -> None:
        """Train in ``enc``/``dec`` (:attr:`work_rows` rows each, e.g. views into a
        lockstep group's arenas) with the VARIANCE statistics arrays ``(work_rows,
        units, 3)``."""
        raise NotImplementedError

    def work(self) -> tuple:
        """``(encoder arena, decoder arena, stats_e, stats_d)`` of the work rows,
        the statistics ``(work_rows, units, 3)``."""
        raise NotImplementedError

    def halves(self) -> tuple:
        """The ``(encoder, decoder)`` arenas a checkpoint holds."""
        raise NotImplementedError

    def pair_arenas(self, name: str) -> tuple:
        """The ``(encoder, decoder)`` arenas a ``pairs`` request names."""
        if name == "work":
            return self.work()[:2]
        return self.halves()

    def bind_centres(self, enc, dec) -> None:
        """Keep the centres in ``enc``/``dec`` (rows of a lockstep group's arenas)."""
        raise NotImplementedError

    def summary(self) -> dict:
        raise NotImplementedError

    def restore(self, ck: ckpt_io.Checkpoint, path) -> None:
        """Restore the history (and any extra state) of a checkpoint."""
        raise NotImplementedError

    def checkpoint_parts(self) -> dict:
        """``history`` (arrays) and ``extra`` of this run's checkpoint."""
        raise NotImplementedError

    # ------------------------------------------------------------ training

    def train_requests(self, ctxs: list) -> None:
        """Train the requests of one yield (their work rows are consecutive) in one
        backend call; sets every ``ctx["loss"]``."""
        t0 = time.perf_counter()
        lo = ctxs[0]["row"]
        rows = range(lo, lo + len(ctxs))
        assert [x["row"] for x in ctxs] == list(rows)
        enc, dec, stats_e, stats_d = self.work()
        losses = self.backend.train(
            enc, dec, rows, self.data.train, np.stack([x["order"] for x in ctxs]),
            [x["lr"] for x in ctxs], self.config.batch_size, self.adam,
            (stats_e[rows.start:rows.stop], stats_d[rows.start:rows.stop]),
            any(x["with_stats"] for x in ctxs))
        for ctx, loss in zip(ctxs, losses):
            ctx["loss"] = float(loss)
        self.train_seconds += time.perf_counter() - t0

    def fulfil(self, reqs: list) -> None:
        """Carry out one yield's requests here."""
        kind = reqs[0]["kind"]
        if kind == "train":
            self.train_requests(reqs)
        elif kind == "pairs":
            enc, dec = self.pair_arenas(reqs[0]["arena"])
            fulfil_pairs(self.backend, enc, dec, self.data.train, reqs, [(0, 0)] * len(reqs))
        elif kind == "population":
            stats = [self.backend.population_stats(h.params, h.mask, h.population)
                     for h in self.halves()]
            for req in reqs:
                req["result"] = (stats[0][0][0], stats[0][1][0], stats[1][0][0], stats[1][1][0])
        else:
            raise ValueError(f"unknown request kind {kind!r}")

    def run_epoch(self) -> None:
        """One epoch, carrying out each request here."""
        for reqs in self.epoch_steps():
            self.fulfil(reqs)

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

    def final_summary(self) -> dict:
        """The ``final_*`` entries of the final compression phase
        (:func:`sparseae.compress.final_phase`), run once when the run has finished
        and ``final_density`` is set; else empty."""
        if self.config.final_density is None or self.epoch < self.config.epochs:
            return {}
        if getattr(self, "_final", None) is None:
            from sparseae.compress import final_phase

            self._final = final_phase(self)
        return self._final

    def timing(self) -> dict:
        """The summary's time figures."""
        out = {key: getattr(self, key) for key in self.timing_keys}
        out["us_per_step"] = 1e6 * self.train_seconds / max(1, self.steps)
        out["compile_seconds"] = self.compile_seconds
        return out

    # ------------------------------------------------------------ checkpoints

    def to_checkpoint(self) -> ckpt_io.Checkpoint:
        state = {"epoch": self.epoch, "rng": self.rng.bit_generator.state, "steps": self.steps,
                 "arch": list(self.arch.sizes), "data_sha256": run_fingerprint(self)}
        state.update({key: getattr(self, key) for key in self.timing_keys})
        enc, dec = self.halves()
        return ckpt_io.Checkpoint(kind=self.kind, config=self.config.to_dict(), state=state,
                                  arenas={"encoder": enc.arrays(), "decoder": dec.arrays()},
                                  **self.checkpoint_parts())

    def save(self, path) -> None:
        """Write the whole run state to an HDF5 checkpoint (atomically)."""
        save_run(self, path)

    @classmethod
    def from_checkpoint(cls, path, data: Dataset | None = None, epochs: int | None = None,
                        ck: ckpt_io.Checkpoint | None = None, keep_schedule: bool = False):
        """Resume a run; it then ends bit-identical to the uninterrupted run.

        ``data`` must be the run's data (checked by fingerprint); None finds it
        from the checkpoint.  ``epochs`` may extend the run; the run is then the
        one configured with the new total from here on (the lr decay step and
        the schedule's T follow the new total, unless ``keep_schedule``), so it
        is no longer identical to any uninterrupted run.
        """
        keys = ("epoch", "rng", "steps", "arch", "data_sha256") + cls.timing_keys
        ck, config = read_checkpoint(path, keys, ck, kind=cls.kind)
        config, data = resume_config(ck, path, config, data, epochs, keep_schedule)
        run = cls(config, data)
        check_same_run(run, ck, path)
        restore_arenas(*run.halves(), ck, path)
        run.rng.bit_generator.state = ck.state["rng"]
        run.epoch = int(ck.state["epoch"])
        run.steps = int(ck.state["steps"])
        for key in cls.timing_keys:
            setattr(run, key, float(ck.state[key]))
        run.restore(ck, path)
        return run


def fulfil_pairs(backend, enc, dec, X, reqs: list, bases: list) -> None:
    """Carry out ``pairs`` requests with as few backend calls as there are shapes.

    ``enc``/``dec``: the arenas the requests' rows index, ``X`` the training
    matrix their ``rows`` index; request ``i``'s indices are offset by
    ``bases[i] = (arena row, data row)`` (a lockstep group's runs have their
    rows at different places).  Sets every ``result``.
    """
    by_shape = {}
    for req, base in zip(reqs, bases):
        key = (len(req["enc"]), len(req["dec"]), len(req["rows"]), req["chunk"])
        by_shape.setdefault(key, []).append((req, base))
    for (_, _, _, chunk), items in by_shape.items():
        e = np.stack([np.asarray(r["enc"], np.int64) + b[0] for r, b in items])
        d = np.stack([np.asarray(r["dec"], np.int64) + b[0] for r, b in items])
        rows = np.stack([np.asarray(r["rows"], np.int64) + b[1] for r, b in items])
        out = backend.pairs(enc.params, enc.table, dec.params, dec.table, X, e, d, rows, chunk)
        for q, (req, _) in enumerate(items):
            req["result"] = out[q]

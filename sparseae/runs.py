"""Pick the run class for a config or a checkpoint (canonical or Lipi-AE-S).

:func:`evaluate` (the metrics of a checkpoint) is :mod:`sparseae.evaluation`'s.
"""

from __future__ import annotations

from sparseae import checkpoint as ckpt_io
from sparseae.canonical import CanonicalRun
from sparseae.coevolution import LipiRun
from sparseae.config import TrainConfig
from sparseae.data import Dataset
from sparseae.errors import CheckpointError
from sparseae.evaluation import evaluate

__all__ = ["evaluate", "make_run", "resume_run", "train"]


def make_run(config: TrainConfig, data: Dataset | None = None):
    """A :class:`LipiRun` or :class:`CanonicalRun` for ``config.paradigm``."""
    config = config.validate()
    return (LipiRun if config.paradigm == "lipi" else CanonicalRun)(config, data)


def resume_run(path, data: Dataset | None = None, epochs: int | None = None,
               keep_schedule: bool = False):
    """Resume the run saved in ``path`` (either kind).

    ``epochs`` sets a new total (at least the epochs done).  From then on the run
    is the one configured with that total: the lr decay step and the pruning
    schedule's T follow it, so the extension is not the same as a run configured
    with ``epochs`` from the start.  With ``keep_schedule`` they stay those of the
    saved run (the extension continues its schedules past their end).  ``data``
    None finds the run's data from the checkpoint (see :mod:`sparseae.provenance`).
    """
    ck = ckpt_io.load(path)
    cls = {"population": LipiRun, "canonical": CanonicalRun}.get(ck.kind)
    if cls is None:
        raise CheckpointError(f"checkpoint: {path} holds an unknown kind {ck.kind!r}")
    return cls.from_checkpoint(path, data, epochs, ck=ck, keep_schedule=keep_schedule)


def train(config: TrainConfig | None = None, data: Dataset | None = None, callback=None,
          **overrides):
    """Train a run to the end; return ``(model, summary, run)``.

    ``model`` is the trained :class:`Autoencoder` (for Lipi-AE-S the best
    centre by test L1).

    Examples
    --------
    >>> model, summary, run = sparseae.train(paradigm="canonical", epochs=20)  # doctest: +SKIP
    """
    config = config or TrainConfig()
    if overrides:
        config = config.replace(**overrides)
    run = make_run(config, data)
    summary = run.run(callback)
    model = run.centre(summary["best_cell"]) if isinstance(run, LipiRun) else run.model
    return model, summary, run

"""Pick the run class for a config or a checkpoint (canonical or Lipi-AE-S)."""

from __future__ import annotations

import numpy as np

from sparseae import checkpoint as ckpt_io
from sparseae.canonical import CanonicalRun, evaluate_checkpoint, pair_metrics, read_checkpoint
from sparseae.coevolution import LipiRun
from sparseae.config import TrainConfig
from sparseae.data import Dataset
from sparseae.errors import CheckpointError, DataError
from sparseae.provenance import locate
from sparseae.model import Arena, Architecture, Autoencoder


def make_run(config: TrainConfig, data: Dataset | None = None):
    """A :class:`LipiRun` or :class:`CanonicalRun` for ``config.paradigm``."""
    config.validate()
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


def evaluate(path, data: Dataset | None = None, device: str = "cpu",
             data_file: str | None = None) -> dict:
    """Metrics of a checkpoint of either kind; for a population, every centre and
    the best.  With ``device="cuda"`` the L1 evaluations run on the GPU (and only
    there).

    ``data`` None evaluates on the run's own data, found from the checkpoint and
    checked against its recorded hash (:func:`sparseae.provenance.locate`); else on
    ``data`` (``data_file``: where it came from, for the summary).  The summary
    ends with :func:`sparseae.provenance.describe` (profile, seed, lr, data, version).
    """
    from sparseae import backend
    from sparseae.canonical import fingerprint, restore_arenas
    from sparseae.provenance import describe

    b = backend.get(device)
    ck = ckpt_io.load(path)
    kind = ck.kind if ck.kind in ("canonical", "population") else None
    if kind is None:
        raise CheckpointError(f"checkpoint: {path} holds an unknown kind {ck.kind!r}")
    ck, config = read_checkpoint(path, ("epoch", "arch"), ck, kind=kind)
    if data is None:
        data, data_file = locate(ck, path, config)
    info = describe(config, fingerprint(data), data_file)
    if kind == "canonical":
        out = evaluate_checkpoint(path, data, ck=ck, backend=b)
        out.update(info)
        return out
    arch = Architecture(tuple(ck.state["arch"]))
    if arch.input_dim != data.dim:
        raise DataError(f"data: width {data.dim} does not match the checkpoint's input width "
                        f"{arch.input_dim}")
    N = config.population
    enc, dec = Arena(arch.encoder_shapes(), N), Arena(arch.decoder_shapes(), N)
    restore_arenas(enc, dec, ck, path)
    centres = []
    for k in range(N):
        m = Autoencoder(arch)
        m.encoder.copy_row(0, k, source=enc)
        m.decoder.copy_row(0, k, source=dec)
        centres.append(pair_metrics(m, data, config.regrowth, b))
    best = int(np.argmin([c["test_l1"] for c in centres]))
    out = {"paradigm": "lipi", "arch": str(arch), "operator": config.operator,
           "schedule": config.schedule, "population": N, "best_cell": best}
    out.update(centres[best])
    out["centres_test_l1"] = [c["test_l1"] for c in centres]
    out["centres_preserved"] = [c["preserved"] for c in centres]
    out["epochs"] = int(ck.state.get("epoch", 0))
    out.update(info)
    return out

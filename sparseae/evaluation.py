"""Metrics of trained pairs and of checkpoints: L1 on every split, preserved
fractions, FLOPs.

The L1 evaluations go through a :class:`sparseae.backend.Backend`, so a run
on ``device="cuda"`` (and ``sparseae eval --device cuda``) evaluates on the
GPU, and only there.
"""

from __future__ import annotations

import numpy as np

from sparseae import checkpoint as ckpt_io
from sparseae.data import Dataset
from sparseae.errors import CheckpointError, ConfigError, DataError
from sparseae.metrics import flops, preserved
from sparseae.model import Arena, Architecture, Autoencoder


def model_l1(model, X, backend=None) -> float:
    """``model.l1(X)``, computed by ``backend`` (default: the CPU, as ``model.l1`` does)."""
    if backend is None:
        return model.l1(X)
    e, d = model.encoder, model.decoder
    return float(backend.evaluate(e.params[:1], e.table, d.params[:1], d.table, X)[0])


def pair_metrics(model, data: Dataset, zeros: bool = False, backend=None) -> dict:
    """Test/validation/train L1 (evaluated by ``backend``, default the CPU),
    preserved fractions and FLOPs of a trained pair (``zeros``: the reference's
    preserved accounting, see :func:`sparseae.metrics.preserved`)."""
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


def centre(encoders: Arena, decoders: Arena, cell: int, arch: Architecture) -> Autoencoder:
    """A copy of the pair in row ``cell`` of two arenas as an :class:`Autoencoder`."""
    m = Autoencoder(arch)
    m.encoder.copy_row(0, cell, source=encoders)
    m.decoder.copy_row(0, cell, source=decoders)
    return m


def best_cell(encoders: Arena, decoders: Arena, arch: Architecture, X, backend=None) -> tuple:
    """The row of lowest L1 on ``X`` of two arenas' pairs, and every row's L1."""
    l1 = [model_l1(centre(encoders, decoders, k, arch), X, backend)
          for k in range(encoders.population)]
    return int(np.argmin(l1)), l1


def population_metrics(encoders, decoders, arch, data, zeros=False, backend=None) -> list:
    """:func:`pair_metrics` of every row's pair (the centres of a population)."""
    return [pair_metrics(centre(encoders, decoders, k, arch), data, zeros, backend)
            for k in range(encoders.population)]


def best_centre(metrics: list) -> dict:
    """The best centre (lowest test L1) of :func:`population_metrics`, with every
    centre's test L1 and preserved fraction."""
    best = int(np.argmin([m["test_l1"] for m in metrics]))
    out = {"best_cell": best}
    out.update(metrics[best])
    out["centres_test_l1"] = [m["test_l1"] for m in metrics]
    out["centres_preserved"] = [m["preserved"] for m in metrics]
    return out


def load_trained(path) -> tuple:
    """A training checkpoint of either kind, checked, with its individuals in arenas:
    ``(ck, config, arch, encoders, decoders)`` (one row for a canonical run, the
    centres for a population)."""
    from sparseae.resume import read_checkpoint, restore_arenas

    ck = ckpt_io.load(path)
    if ck.kind not in ("canonical", "population"):
        raise CheckpointError(f"checkpoint: {path} holds an unknown kind {ck.kind!r}")
    ck, config = read_checkpoint(path, ("epoch", "arch"), ck, kind=ck.kind)
    try:
        arch = Architecture(tuple(ck.state["arch"]))
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: {path} holds an invalid architecture ({exc})") \
            from None
    N = config.population if ck.kind == "population" else 1
    enc, dec = Arena(arch.encoder_shapes(), N), Arena(arch.decoder_shapes(), N)
    restore_arenas(enc, dec, ck, path)
    return ck, config, arch, enc, dec


def check_width(arch: Architecture, data: Dataset) -> None:
    """Refuse data whose width is not the network's input width."""
    if arch.input_dim != data.dim:
        raise DataError(f"data: width {data.dim} does not match the checkpoint's input width "
                        f"{arch.input_dim}")


def evaluate(path, data: Dataset | None = None, device: str = "cpu",
             data_file: str | None = None) -> dict:
    """Metrics of a checkpoint of either kind; for a population, every centre and
    the best.  With ``device="cuda"`` the L1 evaluations run on the GPU (and only
    there).

    ``data`` None evaluates on the run's own data, found from the checkpoint and
    checked against its recorded hash (:func:`sparseae.provenance.locate`); else on
    ``data`` (``data_file``: where it came from, for the summary).  The summary
    ends with :func:`sparseae.provenance.describe` (profile, seed, lr, data, version).
    Works on checkpoints from any epoch.
    """
    from sparseae import backend
    from sparseae.inputs import fingerprint
    from sparseae.provenance import describe, locate

    b = backend.get(device)
    ck, config, arch, enc, dec = load_trained(path)
    if data is None:
        data, data_file = locate(ck, path, config)
    check_width(arch, data)
    N = enc.population
    metrics = population_metrics(enc, dec, arch, data, config.regrowth, b)
    out = {"paradigm": "lipi" if ck.kind == "population" else "canonical", "arch": str(arch),
           "operator": config.operator, "schedule": config.schedule}
    if ck.kind == "population":
        out["population"] = N
        out.update(best_centre(metrics))
    else:
        out.update(metrics[0])
    out["epochs"] = int(ck.state["epoch"])
    out.update(describe(config, fingerprint(data), data_file))
    return out

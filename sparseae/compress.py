"""The final compression phase: prune a trained pair to a density, fine-tune it.

:func:`compress` takes one autoencoder (a canonical run's model, or the best
centre of a Lipi-AE-S population), prunes it gradually to the target density
with an operator while fine-tuning it with canonical Adam, then fine-tunes it
at that density with permanent masks; it returns the snapshot of lowest
validation L1 among those at the target density.  Training runs use it when
``final_density`` is set (:func:`final_phase`), ``sparseae compress`` on any
checkpoint (:func:`compress_checkpoint`).

Schedule: with ``N`` fine-tuning epochs, epoch ``e`` trains, then prunes to
``d_e = D + (d0 - D) (1 - (e + 1) / R)**3`` (``R = ceil(N / 2)``, ``d0`` the
pair's density before) -- the cubic schedule of :mod:`sparseae.density` over
the first half -- so the second half trains at ``D``.  ``N = 0`` prunes to
``D`` at once.  The per-tensor counts are :func:`sparseae.density.allocate`'s
(``fanin`` by default: every unit keeps the same number of inputs, at least
:data:`sparseae.density.MIN_FANIN` in the narrow layers), so the total density
is ``D`` to one entry per tensor; a tensor already sparser than its count is
left as it is.

With ``refit`` (low densities: at most two inputs per output unit), the output
layer's inputs are then chosen again by fitting (:mod:`sparseae.refit`) and the
network is fine-tuned ``N`` more epochs with those masks; it replaces the first
result when its validation L1 is lower.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from sparseae._options import ADAM_BETAS, ADAM_EPS
from sparseae.density import DEFAULT_ALLOCATION, forward, prune_to
from sparseae.errors import ConfigError
from sparseae.model import Autoencoder
from sparseae.operators import PRUNING_OPERATORS as OPERATORS


def _spread(model, X) -> tuple:
    """Per-unit standard deviation of every layer's pre-activation on ``X``, per half."""
    zs, _ = forward(model.encoder, model.decoder, 0, 0, X)
    s = [z.astype(np.float64).std(axis=0) for z in zs]
    n_enc = model.encoder.n_layers
    return np.concatenate(s[:n_enc]), np.concatenate(s[n_enc:])


def _reset_adam(model) -> None:
    for h in (model.encoder, model.decoder):
        h.m[0] = 0
        h.v[0] = 0
        h.step[0] = 0


def _live(model) -> int:
    return int(model.encoder.mask[0].sum()) + int(model.decoder.mask[0].sum())


def compress(model: Autoencoder, data, density: float, operator: str = "magnitude",
             finetune_epochs: int = 30, *, seed: int = 0, lr: float = 1e-3, batch_size: int = 5,
             config=None, backend=None, allocation: str = DEFAULT_ALLOCATION,
             refit: bool = False):
    """Prune ``model`` to ``density`` with ``operator`` and fine-tune it.

    Parameters
    ----------
    model : the trained pair (not changed).
    data : its Dataset (training split: fine-tuning; validation: the snapshot
        kept, and CONJUNCTIVE's held-out samples; test: the L1 reported).
    config : TrainConfig whose operator switches apply (``prune_output_bias``,
        ``variance_direction``, ``heldout``, ``threshold``; the held-out samples
        always come from the validation split); None: the default profile's.
    seed : seeds every draw (batch orders, RANDOM/VARIANCE choices, held-out
        samples): same inputs and seed, same result.
    refit : after the fine-tuning, choose the output layer's inputs again by
        fitting (:mod:`sparseae.refit`; only where it keeps at most two inputs
        per unit) and fine-tune ``finetune_epochs`` more with those masks; the
        refitted network is kept when its best validation L1 is lower.

    Returns
    -------
    (Autoencoder, dict) : the compressed pair (fresh Adam state) and its
    metrics: ``test_l1_before``, ``test_l1``, ``validation_l1``, ``preserved``,
    ``flops`` (per sample, live entries only, as ``sparseae eval``'s),
    ``flops_compacted`` (the dense network of :func:`sparseae.metrics.compact`),
    ``flops_dense``, ``widths`` (the compacted network's), ``live`` and
    ``parameters``; with ``refit``, ``refit`` (whether the refitted network
    was kept) and ``validation_l1_before_refit``.
    """
    from sparseae import backend as be
    from sparseae.config import TrainConfig
    from sparseae.evaluation import model_l1
    from sparseae.kernels.contract import AdamConfig
    from sparseae.metrics import compact, flops
    from sparseae.operators import conjunctive_marks

    if operator not in OPERATORS:
        raise ConfigError(f"operator: expected one of {', '.join(OPERATORS)}, got {operator!r}")
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density: must be in (0, 1], got {density!r}")
    config = TrainConfig(paradigm="canonical") if config is None else config
    from sparseae._checks import check_density

    check_density("density", density, model.arch, config.prune_output_bias)
    # the final phase is not the reference's: CONJUNCTIVE's held-out samples come from
    # the validation split in every profile, so the test split never steers it
    config = dataclasses.replace(config, heldout_source="validation")
    backend = be.get("cpu") if backend is None else backend
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    m = Autoencoder(model.arch)
    m.encoder.copy_row(0, 0, source=model.encoder, adam=False)
    m.decoder.copy_row(0, 0, source=model.decoder, adam=False)
    before = model_l1(model, data.test, backend)
    enc, dec = m.encoder, m.decoder
    d0 = _live(m) / m.n_params

    def prune(d):
        se = sd = None
        if operator == "variance":
            se, sd = _spread(m, data.train)
        elif operator == "conjunctive":
            se, sd = conjunctive_marks(config, enc, dec, 0, 0, rng, data, backend)
        prune_to(operator, enc, dec, 0, 0, d, rng, output_bias=config.prune_output_bias,
                 scores_e=se, scores_d=sd, direction=config.variance_direction,
                 allocation=allocation)

    N = int(finetune_epochs)
    adam = AdamConfig(float(ADAM_BETAS[0]), float(ADAM_BETAS[1]), float(ADAM_EPS), False)

    def finetune(prune_until):
        """N epochs (pruning after each of the first ``prune_until``); the snapshot
        of lowest validation L1 from the last pruning on is restored; returns its L1."""
        _reset_adam(m)
        stats = (np.zeros((1, enc.n_units, 3)), np.zeros((1, dec.n_units, 3)))
        best, best_params = math.inf, None
        n = data.train.shape[0]
        for e in range(N):
            step_lr = lr if e < N - max(1, N // 4) else lr * 0.1  # last quarter: lr / 10
            backend.train(enc, dec, range(0, 1), data.train, rng.permutation(n)[None],
                          [step_lr], batch_size, adam, stats, False)
            if e < prune_until:
                p = (e + 1) / prune_until
                prune(density + max(0.0, d0 - density) * (1.0 - p) ** 3)
            if e >= prune_until - 1:
                val = model_l1(m, data.validation, backend)
                if val < best:
                    best = val
                    best_params = (enc.params[0].copy(), dec.params[0].copy())
        enc.params[0], dec.params[0] = best_params
        return best

    extra = {}
    if N == 0:
        prune(density)
        val_before = None
    else:
        val_before = finetune(max(1, math.ceil(N / 2)))
    if refit:
        from sparseae.refit import refit_output

        if val_before is None:
            val_before = model_l1(m, data.validation, backend)
        kept = [(h.params[0].copy(), h.mask[0].copy()) for h in (enc, dec)]
        used = refit_output(m, data.train, rng)
        if used and N > 0:
            used = finetune(0) < val_before
        elif used:
            used = model_l1(m, data.validation, backend) < val_before
        if not used:
            for h, (params, mask) in zip((enc, dec), kept):
                h.params[0], h.mask[0] = params, mask
        extra = {"refit": bool(used), "validation_l1_before_refit": val_before}
    _reset_adam(m)
    fl = flops(m)
    info = {
        "test_l1_before": before,
        "test_l1": model_l1(m, data.test, backend),
        "validation_l1": model_l1(m, data.validation, backend),
        "preserved": _live(m) / m.n_params,
        "live": _live(m),
        "parameters": m.n_params,
        "flops": fl["masked"],
        "flops_compacted": fl["compacted"],
        "flops_dense": fl["dense"],
        "widths": compact(m).widths,
        "operator": operator,
        "density": density,
        "allocation": allocation,
        "finetune_epochs": N,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        **extra,
    }
    return m, info


def final_phase(run) -> dict:
    """The final phase of a finished run with ``final_density``: compress its best
    individual (canonical: the model; Lipi-AE-S: the centre of lowest validation
    L1, so the test split never steers what is compressed); sets
    ``run.final_model`` and returns the summary's ``final_*`` entries."""
    from sparseae.evaluation import model_l1

    c = run.config
    if hasattr(run, "model"):
        model, cell = run.model, None
    else:
        l1 = [model_l1(run.centre(k), run.data.validation, run.backend)
              for k in range(run.n_cells)]
        cell = int(np.argmin(l1))
        model = run.centre(cell)
    small, info = compress(model, run.data, c.final_density, c.final_op(), c.finetune_epochs,
                           seed=c.seed, lr=c.finetune_lr, batch_size=c.batch_size, config=c,
                           backend=run.backend, allocation=c.density_allocation,
                           refit=c.final_refit)
    run.final_model = small
    out = {f"final_{k}": info[k] for k in ("test_l1_before", "test_l1", "validation_l1",
                                            "preserved", "flops", "flops_compacted",
                                            "widths", "operator",
                                            "seconds")}
    if "refit" in info:
        out["final_refit"] = info["refit"]
    if cell is not None:
        out["final_cell"] = cell
    return out


# ------------------------------------------------------------------ checkpoints


def load_best(path, data=None, device: str = "cpu"):
    """The best individual of the checkpoint ``path`` (either kind; a population's
    centre of lowest validation L1, as in :func:`final_phase`): ``(model, config,
    data, data_file, ck, cell)``."""
    from sparseae import backend as be
    from sparseae.evaluation import best_cell, centre, check_width, load_trained
    from sparseae.provenance import locate

    ck, config, arch, enc, dec = load_trained(path)
    data_file = None
    if data is None:
        data, data_file = locate(ck, path, config)
    check_width(arch, data)
    cell, _ = best_cell(enc, dec, arch, data.validation, be.get(device))
    return centre(enc, dec, cell, arch), config, data, data_file, ck, cell


def compress_checkpoint(path, density: float, operator: str = "magnitude",
                        finetune_epochs: int = 30, *, seed: int = 0, lr: float = 1e-3,
                        out=None, data=None, data_file=None, device: str = "cpu",
                        allocation: str = DEFAULT_ALLOCATION, refit: bool = False) -> dict:
    """:func:`compress` the best individual of checkpoint ``path``; write the result
    to ``out`` (when given) as a canonical checkpoint ``sparseae eval`` reads.
    Returns the metrics (:func:`compress`'s, plus ``cell`` for a population)."""
    from sparseae import backend as be
    from sparseae import checkpoint as ckpt_io
    from sparseae.inputs import fingerprint
    from sparseae.resume import save_checkpoint

    model, config, data, found, ck, cell = load_best(path, data, device)
    data_file = found if data_file is None else data_file
    small, info = compress(model, data, density, operator, finetune_epochs, seed=seed, lr=lr,
                           batch_size=config.batch_size, config=config, backend=be.get(device),
                           allocation=allocation, refit=refit)
    if ck.kind == "population":
        info["cell"] = cell
    if out is not None:
        cfg = dataclasses.replace(config, paradigm="canonical", operator=operator,
                                  regrowth=False, final_density=density,
                                  final_operator=operator, finetune_epochs=finetune_epochs,
                                  finetune_lr=lr, density_allocation=allocation,
                                  final_refit=refit,
                                  data=data_file if data_file else config.data)
        cfg = cfg.validate()
        state = {"epoch": int(ck.state["epoch"]), "arch": list(model.arch.sizes),
                 "data_sha256": fingerprint(data)}
        save_checkpoint(ckpt_io.Checkpoint(
            kind="canonical", config=cfg.to_dict(), state=state,
            arenas={"encoder": small.encoder.arrays(), "decoder": small.decoder.arrays()}),
            cfg, out)
    return info

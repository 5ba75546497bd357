"""Checks of a config against its data and architecture, before a run allocates anything.

:func:`check_run` is called by both run classes once the data and the
architecture are known: batch size within the training split, a
pruning count within the tensors, and the run's memory within what is available.
"""

from __future__ import annotations

import warnings

from sparseae import _memory
from sparseae.errors import ConfigError, SparseaeWarning


def warn_heldout(config, data, given: bool = True) -> None:
    """Warn when CONJUNCTIVE's held-out samples outnumber the validation split (they are
    then drawn with replacement).  The CLI calls it for every new run; ``given``: whether
    --heldout was on the command line (else the warning says how to set it)."""
    n_val = data.validation.shape[0]
    if "conjunctive" in config.operator.split(",") and config.heldout_source == "validation" \
            and config.heldout > n_val:
        what = (f"--heldout {config.heldout}" if given else
                f"heldout {config.heldout} (not given as a flag; set it with --heldout)")
        warnings.warn(f"{what} is more than the {n_val} samples of the "
                      "validation split: CONJUNCTIVE draws them with replacement (use "
                      f"{n_val} or less to use each sample once)", SparseaeWarning, stacklevel=2)


def check_run(config, data, arch) -> None:
    n_train = data.train.shape[0]
    if config.batch_size > n_train:
        raise ConfigError(f"batch_size: must be in [1, {n_train}] (the training split's size), "
                          f"got {config.batch_size}")
    amount = config.prune_amount
    if isinstance(amount, int) and not isinstance(amount, bool):
        largest = max(max(i * o, o) for i, o, _ in arch.encoder_shapes() + arch.decoder_shapes())
        if amount > largest:
            raise ConfigError(f"prune_amount: a count must be <= {largest} (the entries of the "
                              f"largest tensor), got {amount}; a fraction is in [0, 1]")
    for name in ("target_density", "final_density"):
        value = getattr(config, name)
        if value is not None:
            check_density(name, value, arch, config.prune_output_bias)
    _memory.check_run(config, arch, data.dim)


def check_density(name: str, density: float, arch, output_bias: bool = False) -> None:
    """A density below the share of the entries that are never pruned (the decoder's
    output biases, unless ``output_bias``) cannot be reached."""
    fixed = 0 if output_bias else arch.decoder_shapes()[-1][1]
    if round(density * arch.n_params) < fixed:
        raise ConfigError(f"{name}: must be >= {fixed / arch.n_params:.4g} for architecture "
                          f"{arch} (its {fixed} output biases are never pruned), got {density!r}")

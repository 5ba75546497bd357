"""Pruning (mutation) operators: RANDOM, VARIANCE, CONJUNCTIVE and MAGNITUDE.

Each ``compute_mask`` function follows ``torch.nn.utils.prune``: it takes a
tensor ``t`` (a layer's ``(out, in)`` weight or its ``(out,)`` bias), the
current 0/1 ``mask`` of the same shape, and returns the new mask.  Masks
accumulate (a pruned entry never comes back); ``amount`` as a float is the
fraction of the *live* entries to prune, as an int a count.

:func:`prune_pair` applies an operator to one encoder/decoder pair of arena
rows, zeroes the pruned parameters and their Adam moments, and (default
profile) propagates dead units (:func:`propagate_dead_units`).

Notes
-----
ALGORITHM.md section 3.  Default-profile semantics; the ``gecco25`` variants
are separate switches.
"""

from __future__ import annotations

import numbers

import numpy as np

from sparseae._options import COL_UNIT
from sparseae.errors import ConfigError

OPERATORS = ("none", "random", "variance", "conjunctive", "magnitude")
#: The operators that prune (what a target or final density can use).
PRUNING_OPERATORS = OPERATORS[1:]

#: Probability floor of VARIANCE's per-unit weights, so every live entry can be drawn.
VARIANCE_FLOOR = 0.01


def n_to_prune(amount, n_live: int) -> int:
    """Entries to prune: ``round(amount * n_live)`` for a float, ``amount`` for an int."""
    if isinstance(amount, numbers.Integral) and not isinstance(amount, bool):
        if amount < 0:
            raise ConfigError(f"prune_amount: a count must be >= 0, got {amount}")
        return min(int(amount), n_live)
    if not 0.0 <= amount <= 1.0:
        raise ConfigError(f"prune_amount: a fraction must be in [0, 1], got {amount}")
    return int(round(float(amount) * n_live))


def _keep(mask, pruned_flat_idx):
    new = mask.copy()
    new.reshape(-1)[pruned_flat_idx] = 0
    return new


def random_mask(t, mask, amount, rng: np.random.Generator, scope: str = "live"):
    """RANDOM: prune ``amount`` of the live entries of ``t`` uniformly.

    ``scope="all"`` (gecco25) draws from every entry of the tensor, pruned or
    not, as the reference does on a tensor whose earlier zeros are not masked.
    """
    flat = np.asarray(mask).reshape(-1)
    pool = np.arange(flat.size) if scope == "all" else np.flatnonzero(flat)
    k = n_to_prune(amount, pool.size)
    return _keep(mask, rng.choice(pool, k, replace=False) if k else pool[:0])


def magnitude_mask(t, mask, amount):
    """MAGNITUDE (classic baseline): prune the ``amount`` live entries of
    smallest ``|t|`` (ties by position)."""
    live = np.flatnonzero(np.asarray(mask).reshape(-1))
    k = n_to_prune(amount, live.size)
    mags = np.abs(np.asarray(t).reshape(-1)[live])
    return _keep(mask, live[np.argsort(mags, kind="stable")[:k]])


def unit_spread(stats) -> np.ndarray:
    """Per-unit standard deviation of the pre-activation from fused
    ``(count, sum, sum of squares)`` statistics; 0 for units never seen."""
    stats = np.asarray(stats, np.float64)
    n = np.maximum(stats[:, 0], 1.0)
    mean = stats[:, 1] / n
    var = np.maximum(stats[:, 2] / n - mean * mean, 0.0)
    return np.sqrt(var)


def normalise(scores) -> np.ndarray:
    """Min-max normalise to [0, 1]; all zeros when the scores are constant."""
    s = np.asarray(scores, np.float64)
    ptp = s.max() - s.min() if s.size else 0.0
    return (s - s.min()) / ptp if ptp > 0 else np.zeros_like(s)


def variance_mask(t, mask, amount, spread, rng: np.random.Generator, floor: float = VARIANCE_FLOOR,
                  direction: str = "low", draws: str = "amount"):
    """VARIANCE: prune by the activation spread of each entry's unit.

    ``spread`` has one value per unit (row of ``t``).  Default profile
    (``direction="low"``, ``draws="amount"``): prune ``amount`` of the live
    entries, drawn without replacement with probability proportional to
    ``(1 - normalised spread) + floor``, so units with LOW spread lose more
    (the paper's text).  ``direction="high"`` (the reference) swaps the roles:
    high-spread units lose more.  ``draws="per_entry"`` (the reference) prunes
    each live entry independently with probability equal to its unit's
    normalised score and ignores ``amount`` (about half a layer per event).
    """
    t = np.asarray(t)
    score = normalise(spread) if direction == "high" else 1.0 - normalise(spread)
    if draws == "per_entry":
        p = np.broadcast_to(score.reshape((-1,) + (1,) * (t.ndim - 1)), t.shape)
        prune = rng.random(t.shape) < p
        new = mask.copy()
        new[prune] = 0
        return new
    weight = score + floor
    per_entry = np.broadcast_to(weight.reshape((-1,) + (1,) * (t.ndim - 1)), t.shape).reshape(-1)
    live = np.flatnonzero(np.asarray(mask).reshape(-1))
    k = n_to_prune(amount, live.size)
    if k == 0:
        return mask.copy()
    p = per_entry[live]
    return _keep(mask, rng.choice(live, k, replace=False, p=p / p.sum()))


def conjunctive_mask(t, mask, marks):
    """CONJUNCTIVE: prune whole units (rows of ``t``) whose mark is set."""
    new = mask.copy()
    new[np.asarray(marks, bool)] = 0
    return new


def zero_pruned(arena, i):
    """Zero the parameters and Adam moments of row ``i``'s pruned entries."""
    dead = arena.mask[i] == 0
    arena.params[i][dead] = 0.0
    arena.m[i][dead] = 0.0
    arena.v[i][dead] = 0.0


def count_zeros(arena, i) -> int:
    """Exactly-zero parameters of row ``i`` (the reference's pruned count)."""
    return int(np.count_nonzero(arena.params[i] == 0))


def propagate_dead_units(enc, dec, ie: int, id_: int) -> None:
    """Structural consistency: prune what no longer computes, to a fixed point.

    A hidden unit whose incoming weights and bias are all pruned outputs
    ReLU(0) = 0, so its outgoing weights are pruned; a hidden unit whose
    outgoing weights are all pruned is unused, so its incoming weights and
    bias are pruned.  Both leave the network's function unchanged.  The
    encoder's last layer feeds the decoder's first.
    """
    from sparseae.metrics import useless_units

    chain = [(enc, ie, l) for l in range(enc.n_layers)] + \
        [(dec, id_, l) for l in range(dec.n_layers)]
    masks = [(a.weight(i, l, "mask"), a.bias(i, l, "mask")) for a, i, l in chain]
    for k, useless in enumerate(useless_units(masks)):
        masks[k][0][useless, :] = 0
        masks[k][1][useless] = 0
        masks[k + 1][0][:, useless] = 0
    zero_pruned(enc, ie)
    zero_pruned(dec, id_)


def prune_pair(operator: str, enc, dec, ie: int, id_: int, amount, rng, *,
               stats_e=None, stats_d=None, marks_e=None, marks_d=None,
               structural: bool = True, output_bias: bool = False, regrowth: bool = False,
               random_scope: str = "live", variance_direction: str = "low",
               variance_draws: str = "amount") -> int:
    """Apply ``operator`` to encoder row ``ie`` and decoder row ``id_``.

    ``stats_*`` (fused VARIANCE statistics, ``(units, 3)``) are needed by
    ``variance``; ``marks_*`` (CONJUNCTIVE marks, one per unit) by
    ``conjunctive``.  Pruned parameters and their Adam moments are set to 0.

    Switches (default profile first, gecco25 second):

    * ``output_bias`` False/True: prune the decoder's output biases.  An
      output unit cannot leave the network; without its bias a pruned sigmoid
      unit is stuck at 0.5 instead of the constant it learned.
    * ``structural`` True/False: :func:`propagate_dead_units` afterwards.
    * ``regrowth`` False/True: the masks are permanent, or the chosen entries
      are only zeroed (their Adam moments kept) and train on, as in the
      reference; the rows' ``zeros`` then records the count of exactly-zero
      parameters at this event (the reference's accounting).  The operators
      then see the nonzero entries as the live ones (so ``random_scope``
      ``live`` draws among them, ``all`` among every entry).
    * ``random_scope``, ``variance_direction``, ``variance_draws``: see
      :func:`random_mask` and :func:`variance_mask`.

    Returns the number of entries newly pruned (with ``regrowth``: zeroed).
    """
    if operator not in OPERATORS:
        raise ConfigError(f"operator: expected one of {', '.join(OPERATORS)}, got {operator!r}")
    if operator == "none":
        return 0
    def alive():
        if regrowth:  # the reference counts exactly-zero parameters
            return enc.n - count_zeros(enc, ie) + dec.n - count_zeros(dec, id_)
        return int(enc.mask[ie].sum()) + int(dec.mask[id_].sum())

    before = alive()
    for arena, i, stats, marks in ((enc, ie, stats_e, marks_e), (dec, id_, stats_d, marks_d)):
        for l in range(arena.n_layers):
            u0 = int(arena.table[l, COL_UNIT])
            n_out = arena.shapes[l][1]
            is_output = arena is dec and l == arena.n_layers - 1
            for get in (arena.weight, arena.bias):
                if get == arena.bias and is_output and not output_bias:
                    continue
                t, mask = get(i, l), get(i, l, "mask")
                if regrowth:  # masks stay full: the live entries are the nonzero ones
                    mask = (t != 0).astype(np.uint8)
                if operator == "random":
                    new = random_mask(t, mask, amount, rng, random_scope)
                elif operator == "magnitude":
                    new = magnitude_mask(t, mask, amount)
                elif operator == "variance":
                    new = variance_mask(t, mask, amount, unit_spread(stats[u0:u0 + n_out]), rng,
                                        direction=variance_direction, draws=variance_draws)
                else:
                    new = conjunctive_mask(t, mask, marks[u0:u0 + n_out])
                if regrowth:
                    t[new == 0] = 0.0
                else:
                    mask[...] = new
        if regrowth:
            arena.zeros[i] = count_zeros(arena, i)
        else:
            zero_pruned(arena, i)
    if structural and not regrowth:
        propagate_dead_units(enc, dec, ie, id_)
    return before - alive()


def prune_event(config, operator: str, enc, dec, ie: int, id_: int, rng, data, stats_e, stats_d,
                backend=None) -> int:
    """One pruning event of a run on encoder row ``ie`` and decoder row ``id_``.

    Applies :func:`prune_pair` with the config's switches.  CONJUNCTIVE draws
    ``config.heldout`` samples (of the validation split, without replacement
    when there are enough; gecco25: test rows 1..n-1 with replacement) and
    runs the fused marking pass on ``backend`` (default ``config.device``'s);
    VARIANCE uses the statistics of the epoch just trained.  Returns the
    number of entries newly pruned.
    """
    marks_e = marks_d = None
    if operator == "conjunctive":
        marks_e, marks_d = conjunctive_marks(config, enc, dec, ie, id_, rng, data, backend)
    c = config
    return prune_pair(operator, enc, dec, ie, id_, c.prune_amount, rng,
                      stats_e=stats_e, stats_d=stats_d, marks_e=marks_e, marks_d=marks_d,
                      structural=c.structural, output_bias=c.prune_output_bias,
                      regrowth=c.regrowth, random_scope=c.random_scope,
                      variance_direction=c.variance_direction, variance_draws=c.variance_draws)


def conjunctive_marks(config, enc, dec, ie: int, id_: int, rng, data, backend=None):
    """CONJUNCTIVE marks ``(marks_e, marks_d)`` of encoder row ``ie`` and decoder
    row ``id_`` over ``config.heldout`` samples drawn from ``rng`` (the validation
    split, without replacement when there are enough; gecco25: test rows 1..n-1
    with replacement), computed on ``backend`` (default ``config.device``'s)."""
    from sparseae import backend as be

    backend = be.get(config.device) if backend is None else backend
    k = config.heldout
    if config.heldout_source == "test_reference":
        src = data.test
        idx = rng.integers(1, max(2, src.shape[0]), k)
    else:
        src = data.validation
        idx = rng.choice(src.shape[0], k, replace=k > src.shape[0])
    return backend.conjunctive(enc.params[ie], enc.table, dec.params[id_], dec.table, src[idx],
                               config.threshold)

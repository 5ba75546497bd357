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

from sparseae.errors import ConfigError

OPERATORS = ("none", "random", "variance", "conjunctive", "magnitude")

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


def random_mask(t, mask, amount, rng: np.random.Generator):
    """RANDOM: prune ``amount`` of the live entries of ``t`` uniformly."""
    live = np.flatnonzero(np.asarray(mask).reshape(-1))
    k = n_to_prune(amount, live.size)
    return _keep(mask, rng.choice(live, k, replace=False) if k else live[:0])


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


def variance_mask(t, mask, amount, spread, rng: np.random.Generator, floor: float = VARIANCE_FLOOR):
    """VARIANCE (default profile): prune ``amount`` of the live entries, drawn
    without replacement with probability proportional to ``(1 - normalised
    spread of the entry's unit) + floor``, so units with LOW activation spread
    lose more (the paper's direction).  ``spread`` has one value per unit (row
    of ``t``)."""
    t = np.asarray(t)
    weight = (1.0 - normalise(spread)) + floor
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


def _layers(enc, dec):
    return [(enc, l) for l in range(enc.n_layers)] + [(dec, l) for l in range(dec.n_layers)]


def _zero_pruned(arena, i):
    dead = arena.mask[i] == 0
    arena.params[i][dead] = 0.0
    arena.m[i][dead] = 0.0
    arena.v[i][dead] = 0.0


def propagate_dead_units(enc, dec, ie: int, id_: int) -> None:
    """Structural consistency: prune what no longer computes, to a fixed point.

    A hidden unit whose incoming weights and bias are all pruned outputs
    ReLU(0) = 0, so its outgoing weights are pruned; a hidden unit whose
    outgoing weights are all pruned is unused, so its incoming weights and
    bias are pruned.  Both leave the network's function unchanged.  The
    encoder's last layer feeds the decoder's first.
    """
    layers = _layers(enc, dec)
    rows = {id(enc): ie, id(dec): id_}
    changed = True
    while changed:
        changed = False
        for (a, la), (b, lb) in zip(layers[:-1], layers[1:]):
            ia, ib = rows[id(a)], rows[id(b)]
            wa, ba = a.weight(ia, la, "mask"), a.bias(ia, la, "mask")
            wb = b.weight(ib, lb, "mask")
            dead_in = (wa.sum(axis=1) == 0) & (ba == 0)
            dead_out = wb.sum(axis=0) == 0
            kill_out = dead_in & (wb.sum(axis=0) > 0)
            kill_in = dead_out & ((wa.sum(axis=1) > 0) | (ba > 0))
            if kill_out.any():
                wb[:, kill_out] = 0
                changed = True
            if kill_in.any():
                wa[kill_in, :] = 0
                ba[kill_in] = 0
                changed = True
    _zero_pruned(enc, ie)
    _zero_pruned(dec, id_)


def prune_pair(operator: str, enc, dec, ie: int, id_: int, amount, rng, *,
               stats_e=None, stats_d=None, marks_e=None, marks_d=None,
               structural: bool = True, output_bias: bool = False) -> int:
    """Apply ``operator`` to encoder row ``ie`` and decoder row ``id_``.

    ``stats_*`` (fused VARIANCE statistics, ``(units, 3)``) are needed by
    ``variance``; ``marks_*`` (CONJUNCTIVE marks, one per unit) by
    ``conjunctive``.  Pruned parameters and their Adam moments are set to 0.
    With ``output_bias`` False (default profile) the decoder's output biases
    are never pruned: an output unit cannot leave the network, and without its
    bias a pruned sigmoid unit would be stuck at 0.5 instead of the constant
    it learned.  Returns the number of entries newly pruned.
    """
    if operator not in OPERATORS:
        raise ConfigError(f"operator: expected one of {', '.join(OPERATORS)}, got {operator!r}")
    if operator == "none":
        return 0
    before = int(enc.mask[ie].sum()) + int(dec.mask[id_].sum())
    for arena, i, stats, marks in ((enc, ie, stats_e, marks_e), (dec, id_, stats_d, marks_d)):
        for l in range(arena.n_layers):
            u0 = int(arena.table[l, 6])
            n_out = arena.shapes[l][1]
            is_output = arena is dec and l == arena.n_layers - 1
            for get in (arena.weight, arena.bias):
                if get == arena.bias and is_output and not output_bias:
                    continue
                t, mask = get(i, l), get(i, l, "mask")
                if operator == "random":
                    new = random_mask(t, mask, amount, rng)
                elif operator == "magnitude":
                    new = magnitude_mask(t, mask, amount)
                elif operator == "variance":
                    new = variance_mask(t, mask, amount, unit_spread(stats[u0:u0 + n_out]), rng)
                else:
                    new = conjunctive_mask(t, mask, marks[u0:u0 + n_out])
                mask[...] = new
        _zero_pruned(arena, i)
    if structural:
        propagate_dead_units(enc, dec, ie, id_)
    return before - int(enc.mask[ie].sum()) - int(dec.mask[id_].sum())

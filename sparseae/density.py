"""Pruning to a chosen density: schedule, allocation, prune-and-regrow.

* :func:`cubic_density`: the gradual schedule of Zhu & Gupta (2017, "To prune,
  or not to prune"): the density falls from 1 to the target over a window of
  the run, fast at first and slowly near the end.
* :func:`allocate`: how many live entries each tensor keeps for a total
  density.  Erdos-Renyi-Kernel style (ERK, as in RigL): a weight of shape
  ``(out, in)`` keeps a fraction proportional to ``(in + out) / (in * out)``,
  capped at 1, so the small 30-10-30 bottleneck layers stay dense and the two
  1000-wide layers, which hold 97% of the parameters, give up what is pruned.
  The allocation does not depend on the operator, so at equal density every
  operator gets the same per-tensor budgets and differs only in *which*
  entries it keeps.
* :func:`prune_to`: prune every tensor of one encoder/decoder pair to its
  count with an operator's choice (RANDOM, VARIANCE, CONJUNCTIVE, MAGNITUDE),
  never below it; optionally drop and regrow (SET / RigL) the same number of
  entries, regrown entries starting at 0.
* :func:`density_event`: one event of a run with ``target_density`` set.

Masks are permanent here (pruned entries are 0 in the parameters and both
Adam moments and get no update); dead units are not propagated, so every
tensor ends with exactly its count of live entries.
"""

from __future__ import annotations

import numpy as np

from sparseae._options import COL_UNIT, RELU
from sparseae.errors import ConfigError
from sparseae.operators import (PRUNING_OPERATORS, conjunctive_marks, magnitude_mask,
                                n_to_prune, random_mask, unit_spread, variance_mask,
                                zero_pruned)

#: Training rows whose gradient ranks the entries to regrow ("gradient" regrow).
GROW_ROWS = 100
REGROW = ("none", "random", "gradient")
ALLOCATIONS = ("erk", "fanin", "global")
#: the allocation of the final phase, ``compress`` and ``TrainConfig.density_allocation``
DEFAULT_ALLOCATION = "fanin"
#: ``fanin``: the inputs per unit the narrow layers keep at least, while the
#: widest layer's units keep two or more (:func:`_fanin_real`).  Below about
#: density 0.09 the common fan-in of the default architecture is under 4, and
#: with one fan-in for every layer the narrow 30-10-30 layers, which cost
#: almost nothing, starved the network: at density 0.05 (fan-in 1.9
#: everywhere) the fine-tuned test L1 was 0.2075 on the default data and
#: 0.159 on the gecco25 data; with this floor 0.166 and 0.1235, every seed
#: better (5 seeds, 150 epochs; floors of 2 to 6 measured alike).
MIN_FANIN = 4


def cubic_density(t: float, T: float, target: float, start: float = 0.0,
                  end: float = 0.75) -> float:
    """Density after epoch ``t`` of a run whose final epoch is ``T``.

    ``d = target + (1 - target) * (1 - p)**3`` with ``p = (t - start*T) /
    ((end - start) * T)`` clipped to [0, 1]: 1 before the window, ``target``
    from its end on (Zhu & Gupta 2017, with density = 1 - sparsity).
    """
    t0, t1 = start * T, end * T
    if t >= t1:
        return float(target)
    if t < t0:
        return 1.0
    p = (t - t0) / (t1 - t0)
    return float(target + (1.0 - target) * (1.0 - p) ** 3)


def tensors(enc, dec, output_bias: bool = False) -> list:
    """The prunable tensors of a pair as ``(arena, layer, is_bias)``, encoder then
    decoder, each layer's weight then bias; the decoder's output biases only
    with ``output_bias`` (as :func:`sparseae.operators.prune_pair`)."""
    out = []
    for arena in (enc, dec):
        for l in range(arena.n_layers):
            out.append((arena, l, False))
            if not (arena is dec and l == arena.n_layers - 1 and not output_bias):
                out.append((arena, l, True))
    return out


def _get(arena, i, l, is_bias, which="params"):
    return arena.bias(i, l, which) if is_bias else arena.weight(i, l, which)


def allocate(shapes, budget: int, allocation: str = DEFAULT_ALLOCATION) -> np.ndarray:
    """Live entries per tensor, summing to ``budget`` exactly.

    ``shapes``: each tensor's ``(out, in)`` (a bias: ``(out,)``, taken as an
    ``(out, 1)`` weight).  Tensor ``k`` keeps ``min(size_k, eps * share_k)``
    with ``eps`` solved so the total is ``budget``; the fractional parts are
    rounded by largest remainder (ties to the earlier tensor).  The share:

    * ``erk`` (Erdos-Renyi kernel): ``in + out``, so a tensor's density is
      proportional to ``(in + out) / (in * out)``;
    * ``fanin``: ``out``, so every unit of every layer keeps the same number
      of incoming entries (its fan-in), capped at the layer's input width,
      except that the units of the layers narrower than the widest keep at
      least ``min(MIN_FANIN, 2 k)`` (:data:`MIN_FANIN`; ``k`` the widest
      layer's fan-in; :func:`_fanin_real`).
    """
    sizes = np.array([int(np.prod(s)) for s in shapes], np.float64)
    outs = np.array([s[0] for s in shapes], np.float64)
    ins = np.array([s[1] if len(s) > 1 else 1 for s in shapes], np.float64)
    budget = int(min(max(budget, 0), sizes.sum()))
    if allocation == "fanin":
        real = _fanin_real(outs, ins, budget)
    else:
        real = _erk_real(sizes, outs + ins, budget)
    counts = np.floor(real + 1e-9).astype(np.int64)
    short = budget - int(counts.sum())
    if short > 0:
        frac = np.where(counts < sizes, real - counts, -1.0)
        for k in np.argsort(-frac, kind="stable")[:short]:
            counts[k] += 1
    return counts


def _erk_real(sizes, shares, budget):
    """``min(size, eps * share)`` per tensor with the total ``budget``."""
    scores = shares / sizes
    dense = np.zeros(len(sizes), bool)
    while True:
        rest = budget - sizes[dense].sum()
        denom = (scores * sizes)[~dense].sum()
        eps = rest / denom if denom > 0 else 0.0
        over = ~dense & (eps * scores >= 1.0)
        if not over.any():
            break
        dense |= over
    return np.where(dense, sizes, np.minimum(sizes, eps * scores * sizes))


def _fanin_real(outs, ins, budget):
    """``out * fan_in(f)`` per tensor, the common fan-in ``f`` solved by
    bisection so the total is ``budget`` (the total is continuous and
    increasing in ``f``, so every tensor's count falls with the budget).

    A tensor with fewer units than the widest keeps ``max(f, min(in,
    MIN_FANIN, 2 f))`` inputs per unit, the widest ``f``, each capped at
    ``in``: the cheap narrow layers keep :data:`MIN_FANIN` inputs per unit
    while the widest layer's units keep two or more, and twice as many as
    those below that.  In the default architecture at density 0.05 the
    30-10-30 layers keep 3.5 inputs per unit and the 1000 output units 1.77."""
    narrow = outs < outs.max()

    def fan(f):
        g = np.where(narrow, np.maximum(f, np.minimum(MIN_FANIN, 2.0 * f)), f)
        return np.minimum(g, ins)

    a, b = 0.0, float(ins.max())
    for _ in range(200):  # to float64 precision
        mid = 0.5 * (a + b)
        if float((outs * fan(mid)).sum()) < budget:
            a = mid
        else:
            b = mid
    return outs * fan(b)


def counts_for(enc, dec, density: float, output_bias: bool = False,
               allocation: str = DEFAULT_ALLOCATION, ie: int = 0, id_: int = 0) -> tuple:
    """``(tensors, counts)``: :func:`tensors` and the live entries each keeps at
    total ``density`` of the pair (round(density * parameters) live in all, the
    unprunable output biases included).

    ``allocation``: ``erk`` or ``fanin`` (:func:`allocate`, fixed by the shapes) or ``global``
    (each tensor keeps as many entries as it has among the pair's largest live
    ``|w|`` over all prunable tensors, rows ``ie``/``id_``; never more than it has).
    """
    ts = tensors(enc, dec, output_bias)
    shapes = [(a.shapes[l][1],) if b else (a.shapes[l][1], a.shapes[l][0]) for a, l, b in ts]
    fixed = enc.n + dec.n - int(sum(np.prod(s) for s in shapes))
    total = int(round(density * (enc.n + dec.n)))
    if allocation in ("erk", "fanin"):
        return ts, allocate(shapes, total - fixed, allocation)
    if allocation != "global":
        raise ConfigError(f"density_allocation: expected one of {', '.join(ALLOCATIONS)}, "
                          f"got {allocation!r}")
    mags, owner = [], []
    for k, (a, l, b) in enumerate(ts):
        i = ie if a is enc else id_
        t = np.abs(_get(a, i, l, b)).reshape(-1).astype(np.float64)
        live = _get(a, i, l, b, "mask").reshape(-1) != 0
        mags.append(np.where(live, t, -1.0))
        owner.append(np.full(t.size, k, np.int64))
    mags, owner = np.concatenate(mags), np.concatenate(owner)
    budget = min(max(total - fixed, 0), int(np.count_nonzero(mags >= 0)))
    keep = np.argsort(-mags, kind="stable")[:budget]
    return ts, np.bincount(owner[keep], minlength=len(ts)).astype(np.int64)


def _unit_slice(arena, l):
    u0 = int(arena.table[l, COL_UNIT])
    return slice(u0, u0 + arena.shapes[l][1])


def _per_entry(unit_values, t):
    """Broadcast one value per unit (row of ``t``) to every entry of ``t``."""
    return np.broadcast_to(np.asarray(unit_values).reshape((-1,) + (1,) * (t.ndim - 1)), t.shape)


def row_quotas(live, keep: int) -> np.ndarray:
    """Entries each row keeps when ``keep`` of the rows' ``live`` entries stay, as
    evenly as the rows allow: rows with fewer live entries than the common quota
    keep all of theirs, the others ``q`` or ``q + 1`` (the earlier rows first)."""
    live = np.asarray(live, np.int64)
    keep = int(min(max(keep, 0), live.sum()))
    lo, hi = 0, int(live.max(initial=0))
    while lo < hi:  # the largest q with sum(min(live, q)) <= keep
        q = (lo + hi + 1) // 2
        if int(np.minimum(live, q).sum()) <= keep:
            lo = q
        else:
            hi = q - 1
    quota = np.minimum(live, lo)
    quota[np.flatnonzero(live > lo)[:keep - int(quota.sum())]] += 1
    return quota


def balanced_mask(operator: str, t, mask, k: int, rng):
    """:func:`choose` for a 2-D ``t`` with the ``k`` entries spread over its rows (its
    units) so that their live counts end as even as possible (:func:`row_quotas`).
    Within a row MAGNITUDE and CONJUNCTIVE keep the largest ``|t|`` (a unit's marks
    are one value for its row), RANDOM and VARIANCE keep entries uniformly at random
    (VARIANCE's spread too is one value per row)."""
    m = np.asarray(mask).reshape(t.shape[0], -1)
    live = m != 0
    if operator in ("magnitude", "conjunctive"):
        key = np.abs(np.asarray(t, np.float64).reshape(m.shape))
    else:
        key = rng.random(m.shape)
    key = np.where(live, key, -1.0)
    order = np.argsort(-key, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(m.shape[1])[None, :], axis=1)
    quota = row_quotas(live.sum(axis=1), int(live.sum()) - int(k))
    return (rank < quota[:, None]).astype(np.asarray(mask).dtype).reshape(np.shape(mask))


def choose(operator: str, t, mask, k: int, rng, unit_score=None, direction: str = "low",
           balanced: bool = False):
    """The new mask of tensor ``t`` with ``k`` more of its live entries pruned by
    ``operator``: RANDOM uniformly, MAGNITUDE the smallest ``|t|``, VARIANCE
    drawn by the units' activation spread (``unit_score``: one spread per
    unit, :func:`sparseae.operators.variance_mask`), CONJUNCTIVE the entries of
    its marked units first (``unit_score``: the marks), smallest ``|t|`` first,
    then the smallest ``|t|`` of the other units.  With ``balanced`` (the
    ``fanin`` allocation) a weight is pruned row by row (:func:`balanced_mask`)."""
    if k <= 0:
        return mask.copy()
    if balanced and np.ndim(t) == 2 and operator in PRUNING_OPERATORS:
        return balanced_mask(operator, t, mask, int(k), rng)
    if operator == "random":
        return random_mask(t, mask, int(k), rng)
    if operator == "magnitude":
        return magnitude_mask(t, mask, int(k))
    if operator == "variance":
        return variance_mask(t, mask, int(k), unit_score, rng, direction=direction)
    if operator == "conjunctive":
        live = np.flatnonzero(np.asarray(mask).reshape(-1))
        marked = _per_entry(np.asarray(unit_score, bool), t).reshape(-1)[live]
        mags = np.abs(np.asarray(t).reshape(-1)[live])
        order = np.lexsort((mags, ~marked))  # marked first, then by magnitude
        new = mask.copy()
        new.reshape(-1)[live[order[:k]]] = 0
        return new
    raise ConfigError(f"operator: {operator!r} cannot prune to a density (expected one of "
                      "random, variance, conjunctive, magnitude)")


def grow(kind: str, grad, mask, exclude, r: int, rng):
    """Flat indices of ``r`` pruned entries (mask 0, not in ``exclude``) to regrow:
    the largest ``|grad|`` (``gradient``, ties by position) or uniformly
    (``random``)."""
    cand = np.flatnonzero((np.asarray(mask).reshape(-1) == 0) & ~exclude.reshape(-1))
    r = min(int(r), cand.size)
    if r <= 0:
        return cand[:0]
    if kind == "random":
        return np.sort(rng.choice(cand, r, replace=False))
    g = np.abs(np.asarray(grad).reshape(-1)[cand])
    return cand[np.argsort(-g, kind="stable")[:r]]


def _chain(enc, dec, ie, id_):
    return [(a, i, l) for a, i in ((enc, ie), (dec, id_)) for l in range(a.n_layers)]


def forward(enc, dec, ie, id_, X) -> tuple:
    """Pre-activations and outputs of every layer of a pair on ``X`` (float32)."""
    h = np.ascontiguousarray(X, np.float32)
    zs, hs = [], [h]
    for a, i, l in _chain(enc, dec, ie, id_):
        z = h @ a.weight(i, l).T + a.bias(i, l)
        if a.shapes[l][2] == RELU:
            h = np.maximum(z, np.float32(0))
        else:
            with np.errstate(over="ignore"):  # exp(-z) = inf for very negative z: h = 0
                h = (np.float32(1) / (np.float32(1) + np.exp(-z))).astype(np.float32)
        zs.append(z)
        hs.append(h)
    return zs, hs


def gradients(enc, dec, ie, id_, X) -> list:
    """``(dW (out, in), db)`` per layer (encoder then decoder) of the mean L1 loss
    of a pair on ``X``, for every entry, pruned or not (float32)."""
    X = np.ascontiguousarray(X, np.float32)
    zs, hs = forward(enc, dec, ie, id_, X)
    chain = _chain(enc, dec, ie, id_)
    y = hs[-1]
    dh = (np.sign(y - X) / np.float32(X.size)).astype(np.float32)
    out = [None] * len(chain)
    for k in range(len(chain) - 1, -1, -1):
        a, i, l = chain[k]
        if a.shapes[l][2] == RELU:
            dz = dh * (zs[k] > 0)
        else:
            dz = dh * hs[k + 1] * (np.float32(1) - hs[k + 1])
        out[k] = (dz.T @ hs[k], dz.sum(axis=0))
        dh = dz @ a.weight(i, l)
    return out


def prune_to(operator: str, enc, dec, ie: int, id_: int, density: float, rng, *,
             output_bias: bool = False, scores_e=None, scores_d=None, direction: str = "low",
             regrow: str = "none", regrow_amount=0.1, grow_rows=None,
             allocation: str = DEFAULT_ALLOCATION) -> int:
    """Prune encoder row ``ie`` and decoder row ``id_`` to total ``density``.

    Each tensor of :func:`counts_for` is pruned by ``operator`` (:func:`choose`)
    down to its count; a tensor already at or below it is left alone.
    ``scores_e``/``scores_d``: one value per unit of each half (VARIANCE: the
    activation spread; CONJUNCTIVE: the marks).  With ``regrow`` (``random`` or
    ``gradient``) each tensor then drops ``regrow_amount`` of its live entries
    more (by ``operator``) and regrows as many of its other pruned entries (by
    the gradient of the L1 loss on the rows ``grow_rows``, or at random), so
    its live count stays the count; regrown entries start at 0 with zero Adam
    moments.  Returns the net number of entries pruned.
    """

    ts, counts = counts_for(enc, dec, density, output_bias, allocation, ie, id_)
    balanced = allocation == "fanin"
    before = int(enc.mask[ie].sum()) + int(dec.mask[id_].sum())
    grads = None
    if regrow == "gradient":
        grads = gradients(enc, dec, ie, id_, grow_rows)
    n_enc = enc.n_layers
    for (arena, l, is_bias), count in zip(ts, counts):
        i = ie if arena is enc else id_
        scores = scores_e if arena is enc else scores_d
        t, mask = _get(arena, i, l, is_bias), _get(arena, i, l, is_bias, "mask")
        unit = None if scores is None else scores[_unit_slice(arena, l)]
        live = int(mask.sum())
        new = choose(operator, t, mask, live - int(count), rng, unit, direction, balanced)
        if regrow != "none":
            r = n_to_prune(regrow_amount, int(new.sum()))
            if r > 0 and new.size - int(new.sum()) > 0:
                dropped = choose(operator, t, new, r, rng, unit, direction, balanced)
                exclude = (new == 1) & (dropped == 0)
                g = None
                if grads is not None:
                    g = grads[l if arena is enc else n_enc + l][1 if is_bias else 0]
                idx = grow(regrow, g, new, exclude, r, rng)
                if idx.size == r:  # else the tensor is too dense to swap: keep it as it is
                    new = dropped
                    new.reshape(-1)[idx] = 1
                    for which in ("params", "m", "v"):
                        _get(arena, i, l, is_bias, which).reshape(-1)[idx] = 0.0
        mask[...] = new
    zero_pruned(enc, ie)
    zero_pruned(dec, id_)
    return before - int(enc.mask[ie].sum()) - int(dec.mask[id_].sum())


def unit_scores(operator, stats_e=None, stats_d=None, marks=None):
    """Per-unit scores of each half for :func:`prune_to`."""
    if operator == "variance":
        return unit_spread(stats_e), unit_spread(stats_d)
    if operator == "conjunctive":
        return marks
    return None, None


def density_event(config, operator: str, enc, dec, ie: int, id_: int, rng, data, stats_e,
                  stats_d, epoch: int, backend=None) -> int:
    """One pruning event of a run with ``target_density``: prune the pair to the
    schedule's density after ``epoch`` (:func:`cubic_density` over the run's T),
    with prune-and-regrow while the schedule's window is open (``regrow``); from
    the window's end on the masks are permanent.  Returns the entries pruned."""

    c = config
    T = c.final_epoch()
    d = cubic_density(epoch, T, c.target_density, c.density_start, c.density_end)
    if d >= 1.0:
        return 0
    regrow = c.regrow if epoch < c.density_end * T else "none"
    if regrow == "none":  # nothing to do when every tensor is at its count already
        ts, counts = counts_for(enc, dec, d, c.prune_output_bias, c.density_allocation, ie, id_)
        if all(int(_get(a, ie if a is enc else id_, l, b, "mask").sum()) <= k
               for (a, l, b), k in zip(ts, counts)):
            return 0
    marks = None
    if operator == "conjunctive":
        marks = conjunctive_marks(c, enc, dec, ie, id_, rng, data, backend)
    se, sd = unit_scores(operator, stats_e, stats_d, marks)
    rows = None
    if regrow == "gradient":
        n = data.train.shape[0]
        rows = data.train[rng.choice(n, min(n, GROW_ROWS), replace=False)]
    return prune_to(operator, enc, dec, ie, id_, d, rng, output_bias=c.prune_output_bias,
                    scores_e=se, scores_d=sd, direction=c.variance_direction, regrow=regrow,
                    regrow_amount=c.prune_amount, grow_rows=rows,
                    allocation=c.density_allocation)

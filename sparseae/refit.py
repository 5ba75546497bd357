"""Choose the output layer's inputs by fitting, at a low density (the final phase's refit).

At density 0.05 the default architecture's 1,000 output units keep one or two
of the 30 inputs of the last hidden layer each, and those 1,770 weights are
most of the budget.  Which one or two matters more than anything fine-tuning
can repair: an operator keeps the inputs that carried the dense network's
collective solution (MAGNITUDE: the largest weights), not the ones that
predict the unit best alone.  :func:`refit_output` chooses them by fitting:

1. The last hidden layer's activations on the training split are summarised by
   k-means (k-means++ start) into at most :data:`CENTRES` weighted centres;
   each centre carries the mean of every output's target over its samples.
   Features are divided by their standard deviation over the samples.
2. For every output unit: a logistic fit of its targets on no input (the bias
   alone), on every single input and on every pair (Newton's method,
   :data:`NEWTON_ITERS` steps, ridge :data:`RIDGE`), each scored by its
   weighted cross-entropy.  A unit whose bias is pruned is fitted without one.
3. The layer's live weight count is kept and split again: when it is at most
   one per unit, the units whose best single input lowers the score most get
   one; above that every unit gets its best single and the units whose best
   pair gains most over it get the pair.  Above two per unit nothing is done.
4. The chosen inputs get the fitted weights and the fitted biases are written;
   every other weight of the layer is pruned (weight and mask 0).

The caller fine-tunes afterwards (:func:`sparseae.compress.compress` with
``refit``).  Measured on the default architecture at density 0.05: README,
"Compression".
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sparseae.density import forward

#: At most this many k-means centres summarise the last hidden layer.
CENTRES = 16
#: Lloyd iterations of the k-means.
KMEANS_ITERS = 30
#: Newton steps of every logistic fit, and its ridge (on standardised features).
NEWTON_ITERS = 15
RIDGE = 1e-2
#: Logistic outputs are clipped to [EPS_P, 1 - EPS_P] in the cross-entropy.
EPS_P = 1e-7


def summarise(H: np.ndarray, Y: np.ndarray, rng: np.random.Generator,
              centres: int = CENTRES) -> tuple:
    """k-means of the rows of ``H`` (hidden activations, ``(N, h)``) into at most
    ``centres`` centres; returns ``(features (C, h), weights (C,), targets (C, D))``:
    the centres, the fraction of samples in each and the mean of ``Y`` (``(N, D)``)
    over them (empty centres dropped)."""
    H = np.asarray(H, np.float64)
    N = H.shape[0]
    k = min(int(centres), N)
    cen = H[rng.choice(N, 1)]
    for _ in range(1, k):  # k-means++: the next centre far from those chosen
        d = ((H[:, None, :] - cen[None]) ** 2).sum(axis=2).min(axis=1)
        if d.sum() <= 0:
            break
        cen = np.vstack([cen, H[rng.choice(N, 1, p=d / d.sum())]])
    for _ in range(KMEANS_ITERS):
        lab = ((H[:, None, :] - cen[None]) ** 2).sum(axis=2).argmin(axis=1)
        new = np.stack([H[lab == c].mean(axis=0) if np.any(lab == c) else cen[c]
                        for c in range(len(cen))])
        if np.array_equal(new, cen):
            break
        cen = new
    lab = ((H[:, None, :] - cen[None]) ** 2).sum(axis=2).argmin(axis=1)
    used = np.unique(lab)
    lab = np.searchsorted(used, lab)
    counts = np.bincount(lab, minlength=len(used)).astype(np.float64)
    targets = np.stack([np.asarray(Y[lab == c], np.float64).mean(axis=0)
                        for c in range(len(used))])
    return cen[used], counts / N, targets


@njit(cache=True)
def _solve(M, g, q):
    """Solve ``M[:q, :q] x = g[:q]`` in place (Gaussian elimination, partial
    pivoting; ``M`` is symmetric positive definite); the solution is left in ``g``."""
    for c in range(q):
        p = c
        for r in range(c + 1, q):
            if abs(M[r, c]) > abs(M[p, c]):
                p = r
        if p != c:
            for j in range(q):
                M[c, j], M[p, j] = M[p, j], M[c, j]
            g[c], g[p] = g[p], g[c]
        for r in range(c + 1, q):
            f = M[r, c] / M[c, c]
            for j in range(c, q):
                M[r, j] -= f * M[c, j]
            g[r] -= f * g[c]
    for c in range(q - 1, -1, -1):
        s = g[c]
        for j in range(c + 1, q):
            s -= M[c, j] * g[j]
        g[c] = s / M[c, c]


@njit(cache=True)
def _logistic(A, q, t, w, iters, ridge, coef, M, g):
    """Fit ``sigmoid(A[:, :q] @ coef)`` to the soft targets ``t`` with weights ``w``
    (Newton's method from 0, ridge on every coefficient); returns the weighted
    cross-entropy.  ``coef``, ``M``, ``g`` are scratch of size >= q."""
    C = A.shape[0]
    for j in range(q):
        coef[j] = 0.0
    for _ in range(iters):
        for i in range(q):
            g[i] = ridge * coef[i]
            for j in range(q):
                M[i, j] = ridge if i == j else 0.0
        for c in range(C):
            z = 0.0
            for j in range(q):
                z += A[c, j] * coef[j]
            y = 1.0 / (1.0 + np.exp(-min(max(z, -30.0), 30.0)))
            r = w[c] * (y - t[c])
            s = w[c] * y * (1.0 - y)
            for i in range(q):
                g[i] += r * A[c, i]
                for j in range(q):
                    M[i, j] += s * A[c, i] * A[c, j]
        _solve(M, g, q)
        for j in range(q):
            coef[j] -= g[j]
    ce = 0.0
    for c in range(C):
        z = 0.0
        for j in range(q):
            z += A[c, j] * coef[j]
        y = 1.0 / (1.0 + np.exp(-min(max(z, -30.0), 30.0)))
        y = min(max(y, EPS_P), 1.0 - EPS_P)
        ce -= w[c] * (t[c] * np.log(y) + (1.0 - t[c]) * np.log(1.0 - y))
    return ce


@njit(cache=True, parallel=True)
def fit_candidates(Z, w, T, has_bias, iters, ridge):
    """For every output ``d``: the fits of ``T[:, d]`` on the centres' features ``Z``
    (``(C, h)``, weights ``w``) with no input, the best single input and the best
    pair (lowest cross-entropy; ties to the lower indices).

    Returns ``e0, b0, e1, i1, c1, e2, i2, c2``: scores ``(D,)``; the bias of the
    bias-only fit; the single's index and ``(weight, bias)``; the pair's indices
    ``(D, 2)`` and ``(weight, weight, bias)``.  ``has_bias[d]`` 0: no bias term.
    """
    C, h = Z.shape
    D = T.shape[1]
    e0 = np.empty(D)
    b0 = np.empty(D)
    e1 = np.full(D, np.inf)
    i1 = np.zeros(D, np.int64)
    c1 = np.zeros((D, 2))
    e2 = np.full(D, np.inf)
    i2 = np.zeros((D, 2), np.int64)
    c2 = np.zeros((D, 3))
    for d in prange(D):
        t = T[:, d].copy()
        A = np.zeros((C, 3))
        coef = np.zeros(3)
        M = np.zeros((3, 3))
        g = np.zeros(3)
        one = 1.0 if has_bias[d] else 0.0
        for c in range(C):
            A[c, 0] = one
        e0[d] = _logistic(A, 1, t, w, iters, ridge, coef, M, g)
        b0[d] = coef[0]
        for c in range(C):
            A[c, 1] = one
        for p in range(h):
            for c in range(C):
                A[c, 0] = Z[c, p]
            e = _logistic(A, 2, t, w, iters, ridge, coef, M, g)
            if e < e1[d]:
                e1[d] = e
                i1[d] = p
                c1[d, 0] = coef[0]
                c1[d, 1] = coef[1]
        for c in range(C):
            A[c, 2] = one
        for p in range(h):
            for q in range(p + 1, h):
                for c in range(C):
                    A[c, 0] = Z[c, p]
                    A[c, 1] = Z[c, q]
                e = _logistic(A, 3, t, w, iters, ridge, coef, M, g)
                if e < e2[d]:
                    e2[d] = e
                    i2[d, 0] = p
                    i2[d, 1] = q
                    c2[d, 0] = coef[0]
                    c2[d, 1] = coef[1]
                    c2[d, 2] = coef[2]
    return e0, b0, e1, i1, c1, e2, i2, c2


def split_budget(e0, e1, e2, budget: int) -> np.ndarray:
    """Inputs per unit (0, 1 or 2) summing to ``budget`` (at most twice the units):
    up to one per unit, the largest gains of a single over the bias alone; above
    that, every unit one and the largest gains of a pair over the single two.
    Ties go to the lower unit index."""
    D = len(e0)
    if not 0 <= budget <= 2 * D:
        raise ValueError(f"budget {budget} outside [0, {2 * D}]")
    k = np.zeros(D, np.int64)
    if budget <= D:
        k[np.argsort(-(np.asarray(e0) - e1), kind="stable")[:budget]] = 1
    else:
        k[:] = 1
        k[np.argsort(-(np.asarray(e1) - e2), kind="stable")[:budget - D]] = 2
    return k


def refit_output(model, X: np.ndarray, rng: np.random.Generator,
                 centres: int = CENTRES) -> bool:
    """Choose the inputs of ``model``'s output layer by fitting (module docstring) on
    the training rows ``X``; the layer's live weight count is kept.  Returns False,
    changing nothing, when the layer keeps more than two inputs per unit."""
    enc, dec = model.encoder, model.decoder
    L = dec.n_layers - 1
    W = dec.weight(0, L)
    Wm = dec.weight(0, L, "mask")
    b = dec.bias(0, L)
    bm = dec.bias(0, L, "mask")
    D = W.shape[0]
    budget = int(np.count_nonzero(Wm))
    if budget > 2 * D:
        return False
    _, hs = forward(enc, dec, 0, 0, X)
    H = hs[-2].astype(np.float64)  # the output layer's inputs
    sd = H.std(axis=0)
    sd[sd == 0] = 1.0
    feats, w, T = summarise(H / sd, X, rng, centres)
    has_bias = (bm != 0).astype(np.uint8)
    e0, b0, e1, i1, c1, e2, i2, c2 = fit_candidates(feats, w, T, has_bias, NEWTON_ITERS, RIDGE)
    k = split_budget(e0, e1, e2, budget)
    # a unit without a bias was fitted with its bias column 0: its fitted bias is 0
    Wn = np.zeros(W.shape, np.float64)
    bn = b0.copy()
    one = k == 1
    Wn[one, i1[one]] = c1[one, 0] / sd[i1[one]]
    bn[one] = c1[one, 1]
    two = k == 2
    for j in (0, 1):
        Wn[two, i2[two, j]] = c2[two, j] / sd[i2[two, j]]
    bn[two] = c2[two, 2]
    live = np.zeros(W.shape, bool)
    live[one, i1[one]] = True
    live[two, i2[two, 0]] = True
    live[two, i2[two, 1]] = True
    W[...] = np.where(live, Wn, 0.0).astype(np.float32)
    Wm[...] = live
    b[...] = bn.astype(np.float32)
    return True

"""Plain-NumPy float64 reference of the autoencoder the kernels implement.

Deliberately simple and slow: matrices are the ``(out, in)`` views that
:meth:`sparseae.model.Arena.weight` exposes, every computation is float64, and
nothing is fused.  The kernel tests compare against this module only.

* every layer is ReLU except the decoder's last one (sigmoid);
* loss: mean absolute error over batch x features, d|d|/dd = sign(d) with
  sign(0) = 0;
* Adam: PyTorch's formula, gradient multiplied by the mask first;
* CONJUNCTIVE: per-sample min-max normalised pre-activations, marks ANDed over
  samples with the early-stop rule.
"""

import numpy as np

from sparseae._options import RELU, SIGMOID
from sparseae.model import Arena


# ------------------------------------------------------------------ flat rows


def views(shapes, row):
    """``[(W, b, act), ...]`` per layer: ``W`` the ``(out, in)`` view and ``b``
    the bias view into the flat 1-D ``row`` (any dtype), via ``Arena.weight``.

    Writing into a view writes into ``row``.
    """
    a = Arena(shapes, 1)
    a.params = row.reshape(1, -1)  # a view: Arena.weight/bias now index into row
    assert np.shares_memory(a.params, row)
    return [(a.weight(0, l), a.bias(0, l), act) for l, (_, _, act) in enumerate(a.shapes)]


def as_f64_row(row):
    return np.array(row, dtype=np.float64)


# ------------------------------------------------------------------ forward


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def activate(z, act):
    if act == RELU:
        return np.maximum(z, 0.0)
    assert act == SIGMOID
    return sigmoid(z)


def layer_forward(W, b, x, act):
    """``x`` (B, in) -> (z, h), both (B, out)."""
    z = np.asarray(x, np.float64) @ np.asarray(W, np.float64).T + np.asarray(b, np.float64)
    return z, activate(z, act)


def half_forward(shapes, row, X):
    """Forward ``X`` (B, in) through one half; returns (zs, hs) per layer."""
    zs, hs = [], []
    h = np.asarray(X, np.float64)
    for W, b, act in views(shapes, as_f64_row(row)):
        z, h = layer_forward(W, b, h, act)
        zs.append(z)
        hs.append(h)
    return zs, hs


def reconstruct(enc_shapes, pe, dec_shapes, pd, X):
    _, he = half_forward(enc_shapes, pe, X)
    _, hd = half_forward(dec_shapes, pd, he[-1])
    return hd[-1]


# ------------------------------------------------------------------ loss


def l1_loss_grad(y, x):
    """Mean |y - x| over all entries and dLoss/dy (sign(0) = 0)."""
    y = np.asarray(y, np.float64)
    x = np.asarray(x, np.float64)
    d = y - x
    return np.abs(d).mean(), np.sign(d) / d.size


# ------------------------------------------------------------------ backward


def layer_backward(W, x, h, act, dh):
    """Given dLoss/dh, return (gW (out,in), gb (out,), dx (B,in))."""
    if act == RELU:
        dz = dh * (h > 0)
    else:
        dz = dh * h * (1.0 - h)
    gW = dz.T @ x
    gb = dz.sum(axis=0)
    dx = dz @ W
    return gW, gb, dx


def half_backward(shapes, row, X, hs, dout):
    """Gradient row (float64, same layout as ``row``) and dLoss/dX."""
    row64 = as_f64_row(row)
    g = np.zeros_like(row64)
    gv = views(shapes, g)
    pv = views(shapes, row64)
    d = np.asarray(dout, np.float64)
    for l in range(len(pv) - 1, -1, -1):
        W, _, act = pv[l]
        x = np.asarray(X, np.float64) if l == 0 else hs[l - 1]
        gW, gb, d = layer_backward(W, x, hs[l], act, d)
        gv[l][0][...] = gW
        gv[l][1][...] = gb
    return g, d


def loss_and_grad(enc_shapes, pe, dec_shapes, pd, X):
    """L1 loss of the pair on the batch ``X`` and the gradient rows (ge, gd)."""
    X = np.asarray(X, np.float64)
    ze, he = half_forward(enc_shapes, pe, X)
    zd, hd = half_forward(dec_shapes, pd, he[-1])
    loss, dy = l1_loss_grad(hd[-1], X)
    gd, dcode = half_backward(dec_shapes, pd, he[-1], hd, dy)
    ge, dx = half_backward(enc_shapes, pe, X, he, dcode)
    return loss, ge, gd, (ze, zd)


# ------------------------------------------------------------------ Adam


class Adam:
    """PyTorch Adam on one flat float64 row, gradient multiplied by ``mask``.

    ``fresh=True``: a brand-new optimiser every step (t = 1, m = v = 0 before
    the step, and the moments are then discarded).
    """

    def __init__(self, n, lr, beta1=0.5, beta2=0.999, eps=1e-8, fresh=False):
        self.m = np.zeros(n)
        self.v = np.zeros(n)
        self.t = 0
        self.lr, self.b1, self.b2, self.eps, self.fresh = lr, beta1, beta2, eps, fresh

    def step(self, p, g, mask):
        g = np.asarray(g, np.float64) * np.asarray(mask, np.float64)
        if self.fresh:
            self.m[:] = 0.0
            self.v[:] = 0.0
            self.t = 0
        self.t += 1
        t = self.t
        m = self.b1 * self.m + (1.0 - self.b1) * g
        v = self.b2 * self.v + (1.0 - self.b2) * g * g
        bc1 = 1.0 - self.b1 ** t
        bc2 = 1.0 - self.b2 ** t
        denom = np.sqrt(v) / np.sqrt(bc2) + self.eps
        p -= (self.lr / bc1) * m / denom
        if self.fresh:
            self.m[:] = 0.0
            self.v[:] = 0.0
        else:
            self.m, self.v = m, v
        return p


# ------------------------------------------------------------------ CONJUNCTIVE


def sample_marks(z, C):
    """Boolean marks of one sample's pre-activation ``z`` (units,)."""
    z = np.asarray(z, np.float64)
    lo, hi = z.min(), z.max()
    if hi == lo:
        return np.zeros(z.shape, bool)
    return (z - lo) / (hi - lo) < C


def conjunctive(Z, C):
    """Marks (bool, units) of one layer over samples ``Z`` (N, units), in order.

    Returns (marks, samples_used, stopped)."""
    marks = sample_marks(Z[0], C)
    used = 1
    stopped = False
    for z in Z[1:]:
        if marks.sum() <= 1:
            stopped = True
            break
        marks &= sample_marks(z, C)
        used += 1
    return marks, used, stopped


def normalised(Z):
    """Per-sample min-max normalised ``Z`` (N, units); NaN rows where constant."""
    Z = np.asarray(Z, np.float64)
    lo = Z.min(axis=1, keepdims=True)
    span = Z.max(axis=1, keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (Z - lo) / np.where(span > 0, span, 1.0), np.nan)


# ------------------------------------------------------------------ training


def train_epoch(enc_shapes, pe, me, dec_shapes, pd, md, X, order, batch_size,
                lr, beta1=0.5, beta2=0.999, eps=1e-8, fresh=False):
    """One epoch, float64.

    Returns a dict: ``pe``, ``pd`` (final rows), ``loss`` (mean batch loss),
    ``losses`` (per batch), ``stats_e``, ``stats_d`` (per unit count, sum z,
    sum z^2 over every forward pass), ``snapshots`` ((pe, pd) copies after
    each step), ``adam_e``, ``adam_d``."""
    pe = as_f64_row(pe)
    pd = as_f64_row(pd)
    ae = Adam(pe.size, lr, beta1, beta2, eps, fresh)
    ad = Adam(pd.size, lr, beta1, beta2, eps, fresh)
    ue = sum(o for _, o, _ in enc_shapes)
    ud = sum(o for _, o, _ in dec_shapes)
    se = np.zeros((ue, 3))
    sd = np.zeros((ud, 3))
    losses = []
    snapshots = []
    for start in range(0, len(order), batch_size):
        Xb = np.asarray(X, np.float64)[order[start:start + batch_size]]
        loss, ge, gd, (ze, zd) = loss_and_grad(enc_shapes, pe, dec_shapes, pd, Xb)
        for stats, zs in ((se, ze), (sd, zd)):
            Z = np.concatenate(zs, axis=1)  # (B, units), layers in table order
            stats[:, 0] += Z.shape[0]
            stats[:, 1] += Z.sum(axis=0)
            stats[:, 2] += (Z * Z).sum(axis=0)
        losses.append(loss)
        ae.step(pe, ge, me)
        ad.step(pd, gd, md)
        snapshots.append((pe.copy(), pd.copy()))
    return dict(pe=pe, pd=pd, loss=float(np.mean(losses)), losses=losses,
                stats_e=se, stats_d=sd, snapshots=snapshots, adam_e=ae, adam_d=ad)

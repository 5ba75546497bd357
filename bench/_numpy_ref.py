"""A plain NumPy float32 twin of sparseae's training step: the benchmarks' baseline.

Written the careful way (preallocated buffers, in-place ufuncs, BLAS for the
matrix products), so the ratio against the kernels measures the kernels, not a
naive baseline.  Weights are ``(out, in)`` arrays that are views of one flat
float32 row per half, so Adam runs over a whole row as the kernel's does.
"""

import math

import numpy as np

from sparseae import _options as opt

LR = 1e-3
BETA1, BETA2 = opt.ADAM_BETAS
EPS = opt.ADAM_EPS




def np_forward(W, b, act, x, h):
    """``h = act(x @ W.T + b)`` with ``W`` ``(out, in)``."""
    np.matmul(x, W.T, out=h)
    h += b
    if act == opt.RELU:
        np.maximum(h, 0, out=h)
    else:
        np.negative(h, out=h)
        np.exp(h, out=h)
        h += 1
        np.reciprocal(h, out=h)


def np_backward(W, act, x, h, dh, gW, gb, dx, need_dx):
    """``dh`` (dL/dh in, dL/dz out); writes ``gW`` ``(out, in)``, ``gb``, ``dx``."""
    if act == opt.RELU:
        dh *= h > 0
    else:
        dh *= h * (1 - h)
    np.matmul(dh.T, x, out=gW)
    np.sum(dh, axis=0, out=gb)
    if need_dx:
        np.matmul(dh, W, out=dx)


def np_adam(half, lr=LR, b1=BETA1, b2=BETA2, eps=EPS):
    """Masked Adam (PyTorch's formula) over one flat float32 row, in place."""
    half["step"] += 1
    t = half["step"]
    step_size = np.float32(lr / (1.0 - b1 ** t))
    inv_sqrt_bc2 = np.float32(1.0 / math.sqrt(1.0 - b2 ** t))
    p, m, v, gm, tmp = half["p"], half["m"], half["v"], half["gm"], half["tmp"]
    np.multiply(half["g"], half["mask"], out=gm)
    m *= b1
    np.multiply(gm, 1 - b1, out=tmp)
    m += tmp
    v *= b2
    np.multiply(gm, gm, out=tmp)
    tmp *= 1 - b2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp *= inv_sqrt_bc2
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    p -= tmp


class NumpyAE:
    """Plain NumPy twin of an :class:`Autoencoder`.

    Weights are ``(out, in)`` arrays that are views of one flat float32 row per
    half (so Adam runs over a whole row, like the kernel).
    """

    def __init__(self, ae):
        self.halves = [self._half(ae.encoder), self._half(ae.decoder)]
        self.layers = [L for h in self.halves for L in h["layers"]]
        self._bufs = {}

    @staticmethod
    def _half(arena):
        n = arena.n
        p = np.empty(n, np.float32)
        mask = np.empty(n, np.uint8)
        g = np.empty(n, np.float32)
        layers = []
        off = 0
        for l, (n_in, n_out, act) in enumerate(arena.shapes):
            k = n_in * n_out
            W = p[off:off + k].reshape(n_out, n_in)
            W[...] = arena.weight(0, l)
            mask[off:off + k].reshape(n_out, n_in)[...] = arena.weight(0, l, "mask")
            gW = g[off:off + k].reshape(n_out, n_in)
            off += k
            b = p[off:off + n_out]
            b[...] = arena.bias(0, l)
            mask[off:off + n_out] = arena.bias(0, l, "mask")
            gb = g[off:off + n_out]
            off += n_out
            layers.append(dict(W=W, b=b, gW=gW, gb=gb, act=act, n_in=n_in, n_out=n_out))
        return dict(p=p, mask=mask, g=g, m=np.zeros(n, np.float32), v=np.zeros(n, np.float32),
                    gm=np.empty(n, np.float32), tmp=np.empty(n, np.float32), step=0,
                    layers=layers)

    def state(self):
        return [(h["p"].copy(), h["m"].copy(), h["v"].copy(), h["step"]) for h in self.halves]

    def restore(self, state):
        for h, (p, m, v, s) in zip(self.halves, state):
            h["p"][...] = p
            h["m"][...] = m
            h["v"][...] = v
            h["step"] = s

    def _buffers(self, B):
        if B not in self._bufs:
            D = self.layers[0]["n_in"]
            self._bufs[B] = dict(
                x=np.empty((B, D), np.float32),
                d=np.empty((B, D), np.float32),
                h=[np.empty((B, L["n_out"]), np.float32) for L in self.layers],
                dx=[np.empty((B, L["n_in"]), np.float32) for L in self.layers],
            )
        return self._bufs[B]

    def forward_backward(self, x, capture=None):
        """Forward, L1 loss and backward on batch ``x`` ``(B, D)``; gradients
        land in the halves' ``g`` rows.  Returns the loss.  With ``capture`` (a
        list) appends per layer copies of its input, output and dL/doutput."""
        B, D = x.shape
        bufs = self._buffers(B)
        a = x
        for L, h in zip(self.layers, bufs["h"]):
            np_forward(L["W"], L["b"], L["act"], a, h)
            a = h
        d = np.subtract(a, x, out=bufs["d"])
        loss = float(np.abs(d).mean())
        dout = np.sign(d, out=d)
        dout *= 1.0 / (B * D)
        for k in range(len(self.layers) - 1, -1, -1):
            L = self.layers[k]
            inp = bufs["h"][k - 1] if k > 0 else x
            if capture is not None:
                capture.append(dict(x=inp.copy(), h=bufs["h"][k].copy(), dh=dout.copy()))
            np_backward(L["W"], L["act"], inp, bufs["h"][k], dout, L["gW"], L["gb"],
                        bufs["dx"][k], k > 0)
            if capture is not None:
                capture[-1].update(gW=L["gW"].copy(), gb=L["gb"].copy(),
                                   dx=bufs["dx"][k].copy() if k > 0 else None)
            dout = bufs["dx"][k]
        if capture is not None:
            capture.reverse()
        return loss

    def step(self, x):
        loss = self.forward_backward(x)
        for h in self.halves:
            np_adam(h)
        return loss

    def epoch(self, X, order, batch_size):
        total = 0.0
        nb = 0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            xb = self._buffers(len(idx))["x"]
            np.take(X, idx, axis=0, out=xb)
            total += self.step(xb)
            nb += 1
        return total / nb



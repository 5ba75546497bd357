"""The kernel contract, shared by ``kernels/cpu.py`` and ``kernels/cuda.py``.

Data
----
* A network half (encoder or decoder) is one row of a flat float32 arena plus
  an int64 *layer table* (``sparseae._options.COL_*`` columns: ``n_in,
  n_out, w_off, b_off, act, transposed, unit_off``).
* A layer's weights are stored with their long axis contiguous: ``(out, in)``
  row-major when ``n_in >= n_out`` (``transposed = 0``), else ``(in, out)``
  (``transposed = 1``).  Every loop then runs along a contiguous axis of
  length ``max(n_in, n_out)``, which is what lets the 30 -> 1000 output layer
  vectorise.  The library hides this behind ``(out, in)`` views.
* Pruned entries hold exactly 0 in the parameters (the pruning code zeroes
  them), so the forward pass reads the weights alone; the mask is applied to
  the gradient inside the Adam update, which therefore leaves pruned weights,
  and their Adam moments, exactly 0.
* Activations are flat ``(B, width)`` row-major buffers.
* Fused reductions: per unit ``(count, sum, sum of squares)`` of the
  pre-activation for VARIANCE (float64 accumulators on purpose: a float32
  sum of squares over an epoch loses the spread to cancellation), and the
  CONJUNCTIVE mark/AND with the reference's early-stop rule.

Arguments
---------
The training entry points take each half as one :class:`Half` bundle (a row
of an arena, or ``P`` rows for the batched ``train_epoch_many``), Adam's
constants as one :class:`AdamConfig` and the VARIANCE accumulators as one
``(stats_e, stats_d)`` pair, so a call names what it passes::

    cpu.train_epoch(enc.half(0), dec.half(0), X, order, batch_size, lr,
                    AdamConfig(0.5, 0.999, 1e-8, False), (stats_e, stats_d), False)

Scalar math
-----------
What one parameter, one unit or one output does is written once here, as
``register_jitable`` functions that the CPU loops and the CUDA threads both
call: the masked Adam update of one entry, the CONJUNCTIVE mark test of one
unit, and the sign of one output's L1 gradient.  Each backend supplies only
its loops.
"""

from typing import NamedTuple

import numpy as np
from numba.extending import register_jitable

_F = np.float32
#: The smallest normal float32 (moments below it are flushed to 0).
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


class Half(NamedTuple):
    """One network half as the kernels see it: one arena row (1-D arrays and a
    1-element ``step``) or ``P`` rows (2-D arrays and ``(P,)`` steps)."""

    params: np.ndarray  #: float32 weights and biases
    mask: np.ndarray  #: uint8, 1 = live
    adam_m: np.ndarray  #: float32 first moments
    adam_v: np.ndarray  #: float32 second moments
    step: np.ndarray  #: int64 Adam step count
    layers: np.ndarray  #: int64 ``(L, 7)`` layer table


class AdamConfig(NamedTuple):
    """Adam's constants; ``fresh``: a new Adam at every step (gecco25 Lipi-AE-S)."""

    beta1: float
    beta2: float
    eps: float
    fresh: bool


# ------------------------------------------------------------------ scalar math


@register_jitable
def flush_tiny(x):
    """``x``, or exactly 0 when ``|x|`` is below the smallest normal float32.

    Keeps stored Adam moments normal where the hardware does not flush
    subnormals (``kernels.fpenv``); it never changes an update, where ``eps``
    dominates any such moment.
    """
    if abs(x) < FLT_MIN:
        return _F(0.0)
    return x


@register_jitable
def adam_moments(m, v, g, b1, b2):
    """The moments after one step with gradient ``g`` (PyTorch's formula)."""
    one = _F(1.0)
    return flush_tiny(b1 * m + (one - b1) * g), flush_tiny(b2 * v + (one - b2) * g * g)


@register_jitable
def fresh_step(w, g, lr, eps):
    """The weight after the first step of a new Adam: ``w - lr g / (|g| + eps)``.

    PyTorch's first step has ``m = (1 - beta1) g`` and ``v = (1 - beta2) g^2``,
    and the bias corrections divide both factors out again, so in exact
    arithmetic the step is this one: no square root, and no ``g^2`` to
    underflow.  (Rounded in float32 it may differ from the moment form in the
    last bits.)
    """
    return w - lr * g / (abs(g) + eps)


@register_jitable
def adam_step(w, m, v, step_size, inv_sqrt_bc2, eps):
    """The weight after one Adam step from the new moments ``m``, ``v``.

    ``step_size = lr / (1 - beta1**t)`` and ``inv_sqrt_bc2 = 1 / sqrt(1 -
    beta2**t)`` are computed once per step, in float64, then rounded.
    """
    return w - step_size * m / (np.sqrt(v) * inv_sqrt_bc2 + eps)


@register_jitable
def marked(z, lo, span, threshold):
    """CONJUNCTIVE's test of one unit: its pre-activation ``z``, min-max
    normalised over the sample's layer (``lo``, ``span = hi - lo``), is below
    ``threshold``.  A sample whose layer is constant (``span`` 0) marks
    nothing."""
    return span > 0 and (z - lo) / span < threshold


@register_jitable
def l1_grad(d, scale):
    """dLoss/dy of one output for ``d = y - x``: ``scale * sign(d)``, 0 at 0
    (PyTorch's gradient of ``|0|``)."""
    if d > 0:
        return scale
    if d < 0:
        return -scale
    return _F(0.0)

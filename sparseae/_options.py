"""Numeric knobs shared by the kernels, kept in one place.

``FASTMATH`` lets LLVM reassociate float32 sums (so reductions vectorise) and use
fused multiply-add, but keeps IEEE semantics for NaN and infinity so that bad
values still propagate and are caught at the boundary. Results stay bit-identical
from run to run on the same machine and compiled binary.
"""

FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})

#: Default Adam hyper-parameters (ALGORITHM.md section 5).
ADAM_BETAS = (0.5, 0.999)
ADAM_EPS = 1e-8

#: Activation codes used in the layer tables.
RELU = 0
SIGMOID = 1

#: Columns of a layer table (int64, one row per dense layer of an arena).
COL_IN, COL_OUT, COL_W, COL_B, COL_ACT, COL_T, COL_UNIT = range(7)
LAYER_COLUMNS = 7

"""sparseae: evolutionary pruning of autoencoders on a NumPy/Numba engine.

Reimplements "Guiding Evolutionary AutoEncoder Training with Activation-Based
Pruning Operators" (GECCO 2025).  The library never imports click or
numba.cuda; the compiled kernels load on first use.

Examples
--------
>>> import sparseae
>>> model, summary, run = sparseae.train(epochs=20, seed=1)   # doctest: +SKIP
>>> summary["test_l1"]                                            # doctest: +SKIP
"""

import os as _os

# Run from a source checkout without installing (PYTHONPATH=<checkout>, as on the GPU
# machines): find the sibling kernels/ and cli/ folders as sparseae.kernels, sparseae.cli.
_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "kernels")) and _os.path.isfile(
        _os.path.join(_root, "kernels", "cpu.py")):
    __path__.append(_root)

from sparseae.canonical import CanonicalRun  # noqa: E402
from sparseae.coevolution import LipiRun  # noqa: E402
from sparseae.config import TrainConfig  # noqa: E402
from sparseae.data import Dataset, binary_clustering, load  # noqa: E402
from sparseae.errors import CheckpointError, ConfigError, DataError, SparseaeError  # noqa: E402
from sparseae.metrics import compact, flops, preserved  # noqa: E402
from sparseae.model import PRESETS, Architecture, Arena, Autoencoder  # noqa: E402
from sparseae.runs import evaluate, make_run, resume_run, train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Architecture", "Arena", "Autoencoder", "CanonicalRun", "CheckpointError", "ConfigError",
    "DataError", "Dataset", "PRESETS", "SparseaeError", "TrainConfig", "binary_clustering",
    "LipiRun", "compact", "evaluate", "flops", "load", "make_run", "preserved", "resume_run",
    "train", "__version__",
]

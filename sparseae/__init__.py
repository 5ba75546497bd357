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

from sparseae.canonical import CanonicalRun
from sparseae.coevolution import LipiRun
from sparseae.config import TrainConfig
from sparseae.data import Dataset, binary_clustering, load
from sparseae.errors import CheckpointError, ConfigError, DataError, SparseaeError
from sparseae.metrics import compact, flops, preserved
from sparseae.model import PRESETS, Architecture, Arena, Autoencoder
from sparseae.runs import evaluate, make_run, resume_run, train

__version__ = "0.1.0"

__all__ = [
    "Architecture", "Arena", "Autoencoder", "CanonicalRun", "CheckpointError", "ConfigError",
    "DataError", "Dataset", "PRESETS", "SparseaeError", "TrainConfig", "binary_clustering",
    "LipiRun", "compact", "evaluate", "flops", "load", "make_run", "preserved", "resume_run",
    "train", "__version__",
]

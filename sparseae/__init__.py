"""sparseae: evolutionary pruning of autoencoders on a NumPy/Numba engine.

Reimplements "Guiding Evolutionary AutoEncoder Training with Activation-Based
Pruning Operators" (GECCO 2025).  The library never imports click or
numba.cuda; the compiled kernels load on first use.

Examples
--------
>>> import sparseae
>>> model, summary, history = sparseae.train(epochs=20, seed=1)   # doctest: +SKIP
>>> summary["test_l1"]                                            # doctest: +SKIP
"""

from sparseae.canonical import CanonicalRun, train
from sparseae.config import TrainConfig
from sparseae.data import Dataset, binary_clustering, load
from sparseae.errors import CheckpointError, ConfigError, DataError, SparseaeError
from sparseae.model import PRESETS, Architecture, Arena, Autoencoder

__version__ = "0.1.0"

__all__ = [
    "Architecture", "Arena", "Autoencoder", "CanonicalRun", "CheckpointError", "ConfigError",
    "DataError", "Dataset", "PRESETS", "SparseaeError", "TrainConfig", "binary_clustering",
    "load", "train", "__version__",
]

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

from sparseae import _cache  # noqa: E402

_cache.configure()  # numba's on-disk cache goes to a per-user folder, not into the package

#: Public name -> the module that defines it; imported on first use (PEP 562), so that
#: ``import sparseae`` is quick and the command line can install its signal handlers
#: before numpy, h5py and numba load.
_EXPORTS = {
    "CanonicalRun": "canonical", "LipiRun": "coevolution", "TrainConfig": "config",
    "Dataset": "data", "binary_clustering": "data", "load": "data",
    "CheckpointError": "errors", "ConfigError": "errors", "DataError": "errors",
    "SparseaeError": "errors", "CompactNetwork": "metrics", "compact": "metrics",
    "flops": "metrics",
    "preserved": "metrics", "PRESETS": "model", "Architecture": "model", "Arena": "model",
    "Autoencoder": "model", "evaluate": "runs", "make_run": "runs", "resume_run": "runs",
    "train": "runs",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparseae' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"sparseae.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "Architecture", "Arena", "Autoencoder", "CanonicalRun", "CheckpointError", "CompactNetwork",
    "ConfigError",
    "DataError", "Dataset", "PRESETS", "SparseaeError", "TrainConfig", "binary_clustering",
    "LipiRun", "compact", "evaluate", "flops", "load", "make_run", "preserved", "resume_run",
    "train", "__version__",
]

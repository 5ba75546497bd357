"""Exceptions raised at sparseae's boundaries (configs, data, checkpoints).

Every message is one line that names the problem; the CLI turns these into
exit code 2.
"""


class SparseaeError(ValueError):
    """Base class: bad input that sparseae refused before doing any work."""


class ConfigError(SparseaeError):
    """A configuration value is outside its allowed range."""


class DataError(SparseaeError):
    """A data file or array cannot be used for training."""


class CheckpointError(SparseaeError):
    """A checkpoint file is missing, corrupt, of another format or too new."""


class ResultsError(SparseaeError):
    """A results file is missing, corrupt, of another format or too new, or cannot be written."""


class ClusterError(SparseaeError):
    """A Dask cluster cannot be reached or went away (``sweep --cluster``)."""


class SparseaeWarning(UserWarning):
    """Something worth knowing that does not stop the run (the CLI prints one line)."""

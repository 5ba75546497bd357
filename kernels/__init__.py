"""Compiled kernels (installed as ``sparseae.kernels``): ``cpu`` (numba.njit) and,
later, ``cuda`` (numba.cuda).  Import the submodule you need; this package
imports nothing heavy by itself."""

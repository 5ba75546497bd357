"""Benchmarks for sparseae (run ``python -m bench.kernels``)."""

"""The ``sparseae`` command line (click), installed as ``sparseae.cli``."""

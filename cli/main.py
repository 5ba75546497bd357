"""Entry point of the ``sparseae`` command: a click group, one module per command."""

import click

from sparseae import __version__
from sparseae.cli.compress import compress
from sparseae.cli.data import data
from sparseae.cli.eval import eval_
from sparseae.cli.export import export
from sparseae.cli.report import report
from sparseae.cli.sweep import sweep
from sparseae.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparseae")
def main():
    """sparseae: evolutionary pruning of autoencoders (GECCO 2025) on Numba kernels."""


main.add_command(train)
main.add_command(eval_)
main.add_command(data)
main.add_command(sweep)
main.add_command(report)
main.add_command(compress)
main.add_command(export)

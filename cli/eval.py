"""``sparseae eval``: metrics of a saved model."""

import os

import click

from sparseae.cli.common import DataArg, FilePath, fail, print_summary, warnings_as_lines
from sparseae.errors import SparseaeError


@click.command("eval")
@click.argument("checkpoint", type=FilePath())
@click.option("--data", "data_path", type=DataArg(), default=None,
              help="Evaluate on this data (.h5/.npz, a data set name or mnist:DIR) instead "
                   "of the run's own.  Without it "
                   "the run's data are found from the checkpoint (their recorded path, else "
                   "next to the checkpoint) and must hash to what the run was trained on.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the L1 evaluations run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def eval_(checkpoint, data_path, device, as_json):
    """Print test L1, preserved fractions and FLOPs of the model in CHECKPOINT
    (for a population: the best centre, and every centre's test L1 and preserved)."""
    from sparseae import datasets
    from sparseae.data import load
    from sparseae.runs import evaluate

    try:
        with warnings_as_lines():
            data = load(data_path) if data_path is not None else None
            summary = evaluate(checkpoint, data, device=device,
                               data_file=None if data_path is None else
                               datasets.describe(data_path) if datasets.is_named(data_path)
                               else os.path.abspath(data_path))
    except SparseaeError as exc:
        fail(exc)
    print_summary(summary, as_json, title=f"checkpoint {checkpoint}")

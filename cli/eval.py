"""``sparseae eval``: metrics of a saved model."""

import click

from sparseae.cli.common import fail, print_summary
from sparseae.errors import SparseaeError


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Evaluate on this data (.h5/.npz) instead of the run's own.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def eval_(checkpoint, data_path, as_json):
    """Print test L1, preserved fractions and FLOPs of the model in CHECKPOINT."""
    from sparseae.canonical import evaluate_checkpoint
    from sparseae.data import load

    try:
        data = load(data_path) if data_path is not None else None
        summary = evaluate_checkpoint(checkpoint, data)
    except SparseaeError as exc:
        fail(exc)
    print_summary(summary, as_json, title=f"checkpoint {checkpoint}")

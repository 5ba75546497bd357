"""``sparseae eval``: metrics of a saved model."""

import click

from sparseae.cli.common import fail, print_summary
from sparseae.errors import SparseaeError


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Evaluate on this data (.h5/.npz) instead of the run's own.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the L1 evaluations run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def eval_(checkpoint, data_path, device, as_json):
    """Print test L1, preserved fractions and FLOPs of the model in CHECKPOINT
    (for a population: the best centre, and every centre's test L1 and preserved)."""
    from sparseae.data import load
    from sparseae.runs import evaluate

    try:
        data = load(data_path) if data_path is not None else None
        summary = evaluate(checkpoint, data, device=device)
    except SparseaeError as exc:
        fail(exc)
    print_summary(summary, as_json, title=f"checkpoint {checkpoint}")

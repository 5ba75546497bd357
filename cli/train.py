"""``sparseae train``: train on generated or user data and print a summary."""

import click

from sparseae.cli.common import fail, print_summary, progress
from sparseae.errors import SparseaeError



def _defaults():
    from sparseae.config import TrainConfig

    return TrainConfig()


@click.command()
@click.option("--arch", default="default", show_default=True,
              help="Preset (default, small, large) or encoder widths such as 784,64,8.")
@click.option("--epochs", type=click.IntRange(min=1), default=_defaults().epochs, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, max=10, min_open=True), default=_defaults().lr,
              show_default=True, help="Adam learning rate.")
@click.option("--lr-decay/--no-lr-decay", default=True, show_default=True,
              help="Step decay x0.1 every max(1, epochs//4) epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--clusters", type=click.IntRange(min=1), default=10, show_default=True,
              help="Generated data: number of centroids.")
@click.option("--dim", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Generated data: bits per sample.")
@click.option("--per-cluster", type=click.IntRange(min=1), default=100, show_default=True,
              help="Generated data: samples per centroid in each split.")
@click.option("--noise", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Generated data: bit-flip probability.")
@click.option("--data-seed", type=click.IntRange(min=0), default=None,
              help="Generated data: seed (default: --seed).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def train(arch, epochs, lr, lr_decay, batch_size, seed, clusters, dim, per_cluster, noise,
          data_seed, quiet, as_json):
    """Train an autoencoder (canonical training) and print test L1 and timing."""
    from sparseae.canonical import CanonicalRun
    from sparseae.config import TrainConfig

    try:
        config = TrainConfig(arch=arch, epochs=epochs, lr=lr, lr_decay=lr_decay,
                             batch_size=batch_size, seed=seed, clusters=clusters, dim=dim,
                             per_cluster=per_cluster, noise=noise, data_seed=data_seed)
        run = CanonicalRun(config)
    except SparseaeError as exc:
        fail(exc)
    with progress(config.epochs, "training", quiet or as_json) as bar:
        def tick(r):
            if bar is not None:
                bar.label = f"epoch {r.epoch}/{config.epochs} loss {r.history['train_loss'][-1]:.4f}"
                bar.update(1)
        summary = run.run(tick)
    print_summary(summary, as_json)

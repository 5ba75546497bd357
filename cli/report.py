"""``sparseae report``: a sweep's results per variant, tests against a baseline, plots."""

import json

import click

from sparseae.cli.common import FilePath, InputError
from sparseae.errors import SparseaeError


@click.command()
@click.argument("results_path", metavar="RESULTS.h5", type=FilePath())
@click.option("--baseline", metavar="VARIANT", default=None,
              help="Variant the others are tested against. [default: the first variant]")
@click.option("--csv", "csv_path", type=FilePath(), default=None,
              help="Also write the table as CSV.")
@click.option("--plot", "plot_path", type=FilePath(), default=None,
              help="Also write a PNG: L1 per epoch per variant and preserved fractions "
                   "(needs matplotlib: pip install 'sparseae[plot]').")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def report(results_path, baseline, csv_path, plot_path, as_json):
    """Tabulate a sweep's RESULTS.h5 per variant.

    Per variant: runs, median and IQR of the final test L1, medians of
    mean_l1 (the figures' metric), preserved fractions (total, encoder,
    decoder), FLOPs and run seconds, and two-sided Mann-Whitney U p-values of
    test_l1 and mean_l1 against the baseline variant.
    """
    from sparseae import report as rep

    try:
        if plot_path is not None:
            rep.require_matplotlib()  # fail before reading anything
        results = rep.load_results(results_path)
        rows = rep.summarize(results, baseline)
        if csv_path is not None:
            rep.write_csv(rows, csv_path)
        if plot_path is not None:
            rep.plot(results, plot_path)
    except SparseaeError as exc:
        raise InputError(str(exc)) from None
    if as_json:
        base = next(r["variant"] for r in rows if r["baseline"])
        click.echo(json.dumps({"results": results_path, "baseline": base, "rows": rows}))
    else:
        click.echo(rep.format_table(rows))

"""Helpers shared by the CLI commands: errors, progress bars, printing."""

import contextlib
import json
import sys

import click

from sparseae.errors import ConfigError, SparseaeError


class InputError(click.ClickException):
    """Bad input found after parsing (data, config, checkpoint): one line, exit 2."""

    exit_code = 2


def flag_for(field: str) -> str:
    return "--" + field.replace("_", "-")


def fail(exc: SparseaeError) -> "None":
    """Re-raise a library error as a one-line CLI error naming the flag when there is one."""
    msg = str(exc)
    if isinstance(exc, ConfigError) and ":" in msg:
        field, rest = msg.split(":", 1)
        if field.isidentifier():
            msg = f"Invalid value for '{flag_for(field)}':{rest}"
    raise InputError(msg) from None


@contextlib.contextmanager
def progress(length: int, label: str, quiet: bool):
    """click's progress bar on a terminal; a no-op when quiet or not a tty."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True,
                           show_pos=True) as bar:
        yield bar


def print_summary(summary: dict, as_json: bool, title: str = "summary") -> None:
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    click.echo(f"{title}:")
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        click.echo(f"  {key:<16} {value}")

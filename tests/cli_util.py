"""The command line as the tests call it: click's runner, and the check of a one-line error."""

from click.testing import CliRunner

from sparseae.cli.main import main


def invoke(*args, **kw):
    """Run ``sparseae ARGS`` in this process (``kw``: CliRunner's, e.g. ``env``)."""
    return CliRunner(**kw).invoke(main, [str(a) for a in args])


def error_line(r, *needles):
    """``r`` exited 2 with one line ``Error: ...`` that contains every needle."""
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])

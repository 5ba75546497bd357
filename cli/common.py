"""Helpers shared by the CLI commands: errors, warnings, paths, printing."""

import contextlib
import json
import os
import sys
import warnings

import click

from sparseae.errors import ConfigError, SparseaeError


def one_line(text) -> str:
    return " ".join(str(text).split())


class InputError(click.ClickException):
    """Bad input found after parsing (data, config, checkpoint): one line, exit 2."""

    exit_code = 2

    def __init__(self, message):
        super().__init__(one_line(message))


def flag_for(field: str) -> str:
    return "--" + field.replace("_", "-")


def fail(exc: SparseaeError, given=None, flags=None) -> "None":
    """Re-raise a library error as a one-line CLI error naming the flag when there is one.

    ``given``: the fields set on the command line (None: all count as given).  A
    field the user did not set is named as a setting with the flag that changes it
    (e.g. a default batch size larger than the data's training split).  ``flags``:
    the command's own flags (field -> flag); a field without one is named as it is.
    """
    msg = one_line(exc)
    if isinstance(exc, ConfigError) and ":" in msg:
        field, rest = msg.split(":", 1)
        if field.isidentifier():
            flag = flag_for(field) if flags is None else flags.get(field)
            if flag is None:
                pass
            elif given is None or field in given:
                msg = f"Invalid value for '{flag}':{rest}"
            else:
                msg = f"{field} (not given as a flag; set it with {flag}):{rest}"
    raise InputError(msg) from None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {one_line(message)}", err=True)


@contextlib.contextmanager
def warnings_as_lines():
    """Show warnings raised inside as one ``Warning: ...`` line each on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct message once
        # as Python's default filters: an unclosed file collected while the command runs
        # may be anyone's, and is no news to the user (tests check the library's readers)
        warnings.simplefilter("ignore", ResourceWarning)
        warnings.showwarning = _show_warning
        yield


class FilePath(click.Path):
    """click.Path(dir_okay=False) that also refuses an empty name."""

    def __init__(self, **kw):
        kw.setdefault("dir_okay", False)
        super().__init__(**kw)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the file name is empty", param, ctx)
        return super().convert(value, param, ctx)


def print_summary(summary: dict, as_json: bool, title: str = "summary") -> None:
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    click.echo(f"{title}:")
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        click.echo(f"  {key:<16} {value}")


def eprint(text: str) -> None:
    click.echo(text, err=True)
    sys.stderr.flush()


class DataArg(FilePath):
    """``--data``: a data file, a data set name (``digits``, ``mnist1d``...) or
    ``mnist:DIR`` / ``fashion-mnist:DIR`` (DIR made absolute here, so a checkpoint
    finds it again from any folder).  A file that does not exist is refused here."""

    name = "data"

    def convert(self, value, param, ctx):
        from sparseae import datasets

        if isinstance(value, str):
            parsed = datasets.parse(value)
            if parsed is not None:
                kind, folder = parsed
                if folder is None:
                    return value
                if not folder.strip():
                    self.fail(f"{kind}: needs a folder ({kind}:DIR, the folder of the "
                              f"{datasets.FOLDER_KINDS[kind]} IDX files)", param, ctx)
                return f"{kind}:{os.path.abspath(os.path.expanduser(folder))}"
        value = super().convert(value, param, ctx)
        if not os.path.exists(value):
            hint = ""
            if os.sep not in value and not os.path.splitext(value)[1]:
                hint = f" (nor a data set name; {datasets.names_hint()})"
            # as the data layer says it (one line, no usage): checked here so that a
            # missing /some/folder/digits is never taken for the name digits
            raise InputError(f"data: file not found: {value}{hint}")
        return value


def check_output(output, overwrite: bool, extensions) -> str:
    """Refuse an ``-o`` file of another extension than ``extensions`` or one that
    exists without ``--overwrite``; return its extension (lower case)."""
    ext = os.path.splitext(output)[1].lower()
    if ext not in extensions:
        raise InputError(f"Invalid value for '-o' / '--output': {output} has the extension "
                         f"{ext or '(none)'!r}; expected {' or '.join(extensions)}")
    if os.path.isfile(output) and not overwrite:
        raise InputError(f"Invalid value for '-o' / '--output': {output} exists; replace it "
                         "with --overwrite or choose another file")
    return ext

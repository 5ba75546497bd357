"""Progress of ``train`` and ``sweep``: a bar on a terminal, plain lines in a log.

On a terminal (stderr is a tty) click's progress bar.  Otherwise (``nohup``, a
batch scheduler, ``> log 2>&1``) one plain line on stderr every
``SPARSEAE_PROGRESS_SECONDS`` seconds (default 30) and at every quarter of the
work, e.g.::

    epoch 100/400  elapsed 0:00:09  eta 0:00:27  best cell: batch L1 0.1523, preserved 0.662
"""

from __future__ import annotations

import os
import sys
import time

import click

#: Seconds between two progress lines when stderr is not a terminal.
DEFAULT_SECONDS = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SPARSEAE_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def hms(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Report ``done`` out of ``total`` (``start`` were done before this session)."""

    def __init__(self, total: int, label: str, quiet: bool, start: int = 0):
        self.total, self.label, self.start = total, label, start
        self.t0 = self.last = time.monotonic()
        self.first = None  # when the first unit of this session finished
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self.interval = _interval()
        self.marks = {start + (total - start) * q // 4 for q in (1, 2, 3, 4)} - {start}
        self.bar = None
        if not quiet and self.tty and total > start:
            self.bar = click.progressbar(length=total - start, label=label, file=sys.stderr,
                                         show_eta=True, show_pos=True)
            self.bar.__enter__()

    def eta(self, done: int) -> float | None:
        now = time.monotonic()
        if done <= self.start:
            return None
        if self.first is not None and done - self.start > 1:  # the first unit includes compiling
            rate = (now - self.first[0]) / (done - self.first[1])
        else:
            rate = (now - self.t0) / (done - self.start)
        return rate * (self.total - done)

    def update(self, done: int, text: str = "") -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.label = f"{self.label} {done}/{self.total} {text}".rstrip()
            self.bar.update(1)
            return
        if done in self.marks or now - self.last >= self.interval:
            self.last = now
            eta = self.eta(done)
            line = (f"{self.label} {done}/{self.total}  elapsed {hms(now - self.t0)}  "
                    f"eta {hms(eta) if eta is not None else '?'}")
            click.echo(f"{line}  {text}".rstrip(), err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

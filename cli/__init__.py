"""The ``sparseae`` command line (click), installed as ``sparseae.cli``.

:func:`main` is the console script.  It first makes Ctrl-C and SIGTERM end the
process with exit code 130 and one line (instead of click's "Aborted!" or a
traceback) until a command installs its own handlers (``train`` and ``sweep``
then stop between epochs / runs and keep what finished), and only then imports
click, numpy and the rest.
"""

import os as _os
import signal as _signal


def _interrupted(signum, frame):
    _os.write(2, b"interrupted\n")
    raise SystemExit(130)


def main(args=None):
    """Run the ``sparseae`` command line."""
    _signal.signal(_signal.SIGINT, _interrupted)
    _signal.signal(_signal.SIGTERM, _interrupted)
    from sparseae.cli.main import main as group

    group(args=args, prog_name="sparseae")

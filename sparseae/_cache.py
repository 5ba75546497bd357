"""Where numba keeps the compiled kernels on disk: a per-user folder, never the package.

numba's default puts the cache of ``cache=True`` functions in a ``__pycache__``
folder next to their source.  For an installed sparseae that is inside
``site-packages/sparseae/kernels``: files pip does not know of, which survive
``pip uninstall`` and leave a ``site-packages/sparseae`` folder behind that shadows
a later (editable) install.  :func:`configure` therefore points numba at
``$NUMBA_CACHE_DIR`` when the user set it, else ``$XDG_CACHE_HOME/sparseae/numba``
(``~/.cache/sparseae/numba``), else a folder in the temporary directory when the
home folder cannot be written.  numba keeps one sub-folder per source folder there,
so a checkout and an installed copy never share compiled code.
"""

from __future__ import annotations

import os
import sys
import tempfile


def default_dir() -> str:
    """The per-user cache folder used when ``NUMBA_CACHE_DIR`` is not set."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):  # no home folder known: never a path relative to cwd
            home = os.path.join(tempfile.gettempdir(), f"sparseae-{_uid()}")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "sparseae", "numba")


def _uid():
    return os.getuid() if hasattr(os, "getuid") else "user"


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def cache_dir() -> str:
    """The folder numba caches sparseae's kernels in (``NUMBA_CACHE_DIR`` wins)."""
    explicit = os.environ.get("NUMBA_CACHE_DIR")
    if explicit:
        return explicit
    path = default_dir()
    if not _writable(path):
        path = os.path.join(tempfile.gettempdir(), f"sparseae-numba-{_uid()}")
    return path


def configure() -> str:
    """Point numba's on-disk cache at :func:`cache_dir` unless the user chose one.

    Sets ``NUMBA_CACHE_DIR`` for numba (and the sweep's worker processes) when numba
    is not imported yet, else numba's already-read ``config.CACHE_DIR``.  Returns the
    folder.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    if "numba" in sys.modules:  # numba has read its environment already
        from numba.core import config

        if not config.CACHE_DIR:
            config.CACHE_DIR = cache_dir()
        return config.CACHE_DIR
    path = cache_dir()
    os.environ["NUMBA_CACHE_DIR"] = path
    return path

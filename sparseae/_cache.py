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

numba checks a cached kernel against its own source file only, and the cached
entry points of ``kernels/cpu.py`` inline helpers from ``kernels/cpu_layers.py``,
``kernels/contract.py`` and ``sparseae/_options.py``: edit a helper and numba would
go on loading the entry points compiled from the old one.  So the default folder
ends in :func:`kernels_tag`, a digest of every kernel source: a changed kernel
source compiles afresh into a new folder.  (A folder the user chose with
``NUMBA_CACHE_DIR`` is used as it is.)
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile


def user_dir() -> str:
    """sparseae's per-user cache folder (``$XDG_CACHE_HOME/sparseae``, ``~/.cache/sparseae``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = os.path.expanduser("~")
        if not os.path.isabs(home):  # no home folder known: never a path relative to cwd
            home = os.path.join(tempfile.gettempdir(), f"sparseae-{_uid()}")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "sparseae")


def kernels_tag() -> str:
    """``k`` and 12 hex digits of the SHA-256 of the kernel sources (every ``.py`` of
    ``kernels/`` and ``sparseae/_options.py``, by name and content)."""
    here = os.path.dirname(os.path.abspath(__file__))
    folders = [os.path.join(here, "kernels"), os.path.join(os.path.dirname(here), "kernels")]
    kernels = next(f for f in folders if os.path.isfile(os.path.join(f, "cpu.py")))
    files = [os.path.join(kernels, f) for f in sorted(os.listdir(kernels)) if f.endswith(".py")]
    h = hashlib.sha256()
    for path in files + [os.path.join(here, "_options.py")]:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
    return "k" + h.hexdigest()[:12]


def default_dir() -> str:
    """The numba cache folder used when ``NUMBA_CACHE_DIR`` is not set."""
    return os.path.join(user_dir(), "numba", kernels_tag())


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
        path = os.path.join(tempfile.gettempdir(), f"sparseae-numba-{_uid()}", kernels_tag())
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

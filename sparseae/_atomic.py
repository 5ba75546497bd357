"""Atomic file writes: temp file in the target's folder, fsync, ``os.replace``."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_target(path, error):
    """Yield a temporary path next to ``path``; on success make it ``path``.

    The caller writes the whole file to the yielded path.  It is then fsynced
    and renamed over ``path`` (and the folder fsynced), so readers see the old
    file or the complete new one, never a partial one.  On any exception the
    temporary file is removed.  ``error`` is the exception class raised (one
    line) when the folder cannot be written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise error(f"output folder {folder} {what}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise error(f"cannot write in {folder} ({exc.strerror})") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; match what open() would create
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise error(f"cannot write {path} ({exc})") from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

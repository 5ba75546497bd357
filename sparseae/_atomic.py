"""Atomic file writes: temp file in the target's folder, fsync, ``os.replace``.

Every write holds the target's lock (:mod:`sparseae._lock`: one writer per
file), and a successful write removes stale temporary files that writers killed
mid-write left next to the target (``.NAME.XXXXXXXX.tmp``, older than this
write's own).
"""

import contextlib
import os
import re
import tempfile
import time

from sparseae import _lock


def one_line(text) -> str:
    """``text`` with its line breaks and runs of spaces collapsed (HDF5 messages have several)."""
    return " ".join(str(text).split())


def check_path(path, error, what: str = "output") -> str:
    """``path`` as a string; ``error`` when it is empty."""
    path = os.fspath(path)
    if not path.strip():
        raise error(f"{what}: the file name is empty")
    return path


def _temp_pattern(name: str):
    # tempfile.mkstemp(prefix=".NAME.", suffix=".tmp") adds 8 characters of [a-z0-9_]
    return re.compile(r"\." + re.escape(name) + r"\.[a-z0-9_]{8}\.tmp\Z")


def stale_temps(path, before: float) -> list:
    """Temporary files of ``path``'s writers last modified before ``before`` (time.time())."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = _temp_pattern(name)
    found = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return found
    for entry in entries:
        if pattern.match(entry):
            full = os.path.join(folder, entry)
            with contextlib.suppress(OSError):
                if os.stat(full).st_mtime < before:
                    found.append(full)
    return found


@contextlib.contextmanager
def atomic_target(path, error):
    """Yield a temporary path next to ``path``; on success make it ``path``.

    The caller writes the whole file to the yielded path.  It is then fsynced
    and renamed over ``path`` (and the folder fsynced), so readers see the old
    file or the complete new one, never a partial one.  On any exception the
    temporary file is removed.  ``error`` is the exception class raised (one
    line) when the folder cannot be written or another process is writing
    ``path``.
    """
    path = check_path(path, error)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise error(f"output folder {folder} {what}")
    with _lock.locked(path, error):
        started = time.time()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                       dir=folder)
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
                raise error(one_line(f"cannot write {path} ({exc})")) from None
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        for stale in stale_temps(path, started):  # left by writers killed mid-write
            with contextlib.suppress(OSError):
                os.unlink(stale)

"""One writer per file: an exclusive ``flock`` on a sidecar lock file.

The lock of ``folder/NAME`` is ``folder/.NAME.lock``, holding the pid of the
process that has it.  :func:`locked` takes it without waiting: when another
process holds it, the caller's error class is raised at once (one line naming
the file and that process's pid).  The kernel releases the lock when its holder
exits in any way (even SIGKILL); a clean release also removes the lock file.
Locks are re-entrant within a process, so a command can hold the lock of its
output for its whole run while every atomic write of that file takes it again.
Where ``fcntl`` does not exist (Windows) there is no locking.
"""

from __future__ import annotations

import contextlib
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None

#: key (real path of the target) -> [fd, lock path, depth]
_HELD: dict = {}


def lock_path(target) -> str:
    """The sidecar lock file of ``target``."""
    target = os.path.abspath(os.fspath(target))
    folder, name = os.path.split(target)
    return os.path.join(folder, f".{name}.lock")


def _key(target) -> str:
    folder, name = os.path.split(os.path.abspath(os.fspath(target)))
    return os.path.join(os.path.realpath(folder), name)


def holder(target) -> int | None:
    """The pid written in ``target``'s lock file (None when there is none)."""
    try:
        with open(lock_path(target)) as f:
            return int(f.read().strip() or "x")
    except (OSError, ValueError):
        return None


def acquire(target, error, label: str | None = None) -> None:
    """Take ``target``'s lock or raise ``error`` naming the process that holds it."""
    if fcntl is None:
        return
    key = _key(target)
    held = _HELD.get(key)
    if held is not None:
        held[2] += 1
        return
    path = lock_path(target)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise error(_prefix(label) + f"output folder {folder} {what}")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise error(_prefix(label) + f"cannot create the lock file {path} "
                        f"({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = holder(target)
            os.close(fd)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise error(_prefix(label) + f"{os.fspath(target)} is in use by another sparseae process "
                        f"({who}); wait for it to finish or write to another file") from None
        try:  # the previous holder may have removed the file between our open and flock
            st, cur = os.fstat(fd), os.stat(path)
            same = (st.st_ino, st.st_dev) == (cur.st_ino, cur.st_dev)
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = [fd, path, 1]


def _prefix(label):
    return f"{label}: " if label else ""


def release(target) -> None:
    """Give back one hold of ``target``'s lock; the last one removes the lock file."""
    held = _HELD.get(_key(target))
    if held is None:
        return
    held[2] -= 1
    if held[2] > 0:
        return
    del _HELD[_key(target)]
    fd, path, _ = held
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still holding it: a waiting opener sees another inode
    os.close(fd)


def is_held(target) -> bool:
    """Whether this process holds ``target``'s lock."""
    return _key(target) in _HELD


@contextlib.contextmanager
def locked(target, error, label: str | None = None):
    """Hold ``target``'s lock for the ``with`` block (see :func:`acquire`)."""
    acquire(target, error, label)
    try:
        yield
    finally:
        release(target)

"""Worker processes that die with the process that started them.

A sweep's workers are children of multiprocessing's fork server, not of the
sweep process, so neither ``os.getppid()`` nor ``PR_SET_PDEATHSIG`` tells them
when the sweep dies.  :func:`watch` starts a daemon thread that checks the
sweep process every ``interval`` seconds (by pid, and on Linux by its start
time, so a reused pid is not mistaken for it) and ends this process at once
when it is gone.
"""

from __future__ import annotations

import os
import threading


def _start_time(pid: int):
    """The process's start time in clock ticks (Linux), None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:  # the command name may hold spaces and parentheses: split after the last ')'
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def alive(pid: int, started) -> bool:
    """Whether process ``pid`` (started at ``started``, from :func:`_start_time`) still runs."""
    if started is not None:
        now = _start_time(pid)
        if now is None or now != started:
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            return state not in (b"Z", b"X")  # a zombie is dead too
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(parent: int, interval: float = 0.5) -> threading.Thread:
    """End this process (exit code 1, no cleanup) once process ``parent`` is gone."""
    started = _start_time(parent)

    def loop():
        import time

        while alive(parent, started):
            time.sleep(interval)
        os._exit(1)

    t = threading.Thread(target=loop, name="sparseae-parent-watch", daemon=True)
    t.start()
    return t

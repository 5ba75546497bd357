"""Setup of the worker processes of the LocalCluster that ``--cluster local:N`` starts
(a Dask preload: ``dask_setup`` runs in every worker process, restarted ones too).

The workers share the sweep's terminal: Ctrl-C reaches them as well, and a
worker that died of it would lose its run (the sweep decides what Ctrl-C
means, as with the local pool), so they ignore SIGINT.  They also end as soon
as the sweep process is gone, even after a SIGKILL (``SPARSEAE_SWEEP_PARENT``,
:mod:`sparseae._parent`).
"""

import os
import signal
import threading

#: The environment variable that names the sweep process's pid.
PARENT_VAR = "SPARSEAE_SWEEP_PARENT"


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.environ.get(PARENT_VAR)
    if parent and parent.isdigit():
        from sparseae._parent import watch

        watch(int(parent))

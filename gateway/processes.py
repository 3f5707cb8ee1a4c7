"""Child processes of ``pamgate serve`` that must not outlive it, and whether a process runs.

The relay workers and the command extraction worker are separate processes.
If ``pamgate serve`` is killed (``kill -9``, the OOM killer), nothing runs
their shutdown: without help they would go on holding the lanes' ports, the
database and recordings, as orphans nobody supervises.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies, however it dies.

    Call it first thing in the child. Linux only, where the gateway runs;
    elsewhere the child still ends when it next reads from its dead parent.
    ``parent_pid`` is the parent's pid as the parent saw it: if the parent
    already died before the prctl took effect, the child exits at once.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

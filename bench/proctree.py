"""CPU time of a process tree from the kernel's own accounting (/proc/PID/stat).

What a relay costs in CPU does not depend on how busy the machine is, while
its throughput does: so the benchmarks report CPU-seconds per GB relayed next
to MB/s. The CPU of a tree is, for the root and every live descendant, its
user + system time plus that of its children already reaped (``cutime`` +
``cstime``: an sshd's per-connection processes, once they exit, count in the
listening sshd's).
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """Live descendants of ``root`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root``'s process tree, reaped children
    included."""
    total = 0
    for pid in (root, *descendants(root)):
        fields = _stat_fields(pid)
        if fields is not None:
            # Fields 14-17 of /proc/PID/stat: utime, stime, cutime, cstime (in clock ticks).
            total += sum(int(value) for value in fields[11:15])
    return total / _TICKS


def settled_cpu_seconds(root: int, *, step: float = 0.2, timeout: float = 15.0) -> float:
    """:func:`tree_cpu_seconds` once the tree has gone idle (a step without a clock tick
    of CPU), so work that follows a transfer (sealing and hashing its recording,
    reaping processes) is counted, and nothing is waited for longer than needed."""
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(root)
    while time.monotonic() < deadline:
        time.sleep(step)
        now = tree_cpu_seconds(root)
        if now - last < 1 / _TICKS:
            return now
        last = now
    return last


#: prctl(2) option: orphaned descendants are re-parented to this process, not to init.
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux).

    A client's helper processes (``ssh -J``'s ProxyCommand) may outlive the
    client, which then never reaps them: their CPU would be lost to this
    process's accounting of its children. As their subreaper, this process
    can reap them (:func:`reap`) and so count them.
    """
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap(pids: list[int], *, timeout: float = 5.0) -> None:
    """Wait for those of ``pids`` that became this process's children (see
    :func:`become_subreaper`); the others were reaped by their own parent."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours: its parent reaped it
                break
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)

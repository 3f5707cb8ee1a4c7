"""Blocking work off the event loop, on a bounded thread pool per kind of work.

asyncio's default executor is one small pool (``min(32, CPUs + 4)`` threads)
for everything. A few large sessions ending together would fill it with
command extraction and recording sealing, and every login, access decision
and audit write of the node would queue behind them. So each kind of work
has its own pool, sized by ``[node]`` settings:

- database: the store and the domain services over it (logins, decisions,
  audit writes); the most threads, each short;
- extraction: command extraction and indexing of recordings (CPU in a
  worker process, but each call blocks its thread until the worker answers);
- files: sealing, compressing and reading recordings.

Password checks have their own queue already
(:mod:`gateway.domain.password_checks`). Waiting for a child process does
not take a thread at all (see :mod:`gateway.ssh.gateway_program`).

Every call site runs its work through :meth:`Executors.run_db`,
:meth:`Executors.run_extraction` or :meth:`Executors.run_files`; none calls
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


class WorkKind(StrEnum):
    """The kinds of blocking work; each runs on its own pool (threads named ``pamgate-KIND``)."""

    DATABASE = "database"
    EXTRACTION = "extraction"
    FILES = "files"


class Executors:
    """One bounded thread pool per :class:`WorkKind`; threads start on first use."""

    def __init__(self, *, database: int = 8, extraction: int = 2, files: int = 4) -> None:
        sizes = {
            WorkKind.DATABASE: database,
            WorkKind.EXTRACTION: extraction,
            WorkKind.FILES: files,
        }
        for kind, size in sizes.items():
            if size < 1:
                raise ValueError(f"the {kind} executor needs at least one thread, not {size}")
        self._pools = {
            kind: ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"pamgate-{kind}")
            for kind, size in sizes.items()
        }

    def pool(self, kind: WorkKind) -> ThreadPoolExecutor:
        """The thread pool that runs ``kind`` work."""
        return self._pools[kind]

    async def run(
        self, kind: WorkKind, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """Run ``fn(*args, **kwargs)`` on the ``kind`` pool; return its result or raise its error.

        The caller's context variables go with it, as with :func:`asyncio.to_thread`.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._pools[kind], call)

    async def run_db(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run database work (logins, decisions, audit writes) on the database pool."""
        return await self.run(WorkKind.DATABASE, fn, *args, **kwargs)

    async def run_extraction(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        """Run command extraction or indexing on the extraction pool."""
        return await self.run(WorkKind.EXTRACTION, fn, *args, **kwargs)

    async def run_files(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run recording file work (sealing, compressing, reading) on the files pool."""
        return await self.run(WorkKind.FILES, fn, *args, **kwargs)

    def shutdown(self) -> None:
        """Stop taking work; threads end once their current work is done (no waiting here)."""
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

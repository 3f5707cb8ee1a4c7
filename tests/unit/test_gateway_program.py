"""Programs the gateway runs itself in a target's place: output, exit status, descriptors."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
from typing import Any

from gateway.ssh.gateway_program import GatewayProgram, RunningProgram


class FakePipe:
    """What RunningProgram reports to: the relay pipe's target-side callbacks."""

    def __init__(self) -> None:
        self.upstream: Any = None
        self.stdout = b""
        self.stderr = b""
        self.exit: tuple[int | None, object] | None = None
        self.closed = asyncio.Event()

    def from_target(self, data: bytes, datatype: object) -> None:
        if datatype is None:
            self.stdout += data
        else:
            self.stderr += data

    def target_eof(self) -> None:
        pass

    def exit_received(self, status: int | None, signal: object) -> None:
        self.exit = (status, signal)

    def target_closed(self, exc: object) -> None:
        self.closed.set()


async def run(code: str, *, stdin: bytes = b"", pty: bool = False) -> FakePipe:
    pipe = FakePipe()
    program = RunningProgram(pipe)  # type: ignore[arg-type]
    argv = [sys.executable, "-c", code]
    await program.start(GatewayProgram("admin", argv), ("xterm", 80, 24) if pty else None)
    if stdin:
        program.write(stdin)
    program.write_eof()
    await asyncio.wait_for(pipe.closed.wait(), 20)
    return pipe


async def test_output_streams_and_exit_status_are_passed_on() -> None:
    pipe = await run(
        "import sys; data = sys.stdin.read(); print(data.upper()); "
        "print('oops', file=sys.stderr); sys.exit(3)",
        stdin=b"hello",
    )
    assert pipe.stdout == b"HELLO\n" and pipe.stderr == b"oops\n"
    assert pipe.exit == (3, None)


async def test_a_pty_child_sees_a_terminal_of_the_clients_size() -> None:
    pipe = await run("import os, sys; print(os.isatty(0), os.get_terminal_size(0))", pty=True)
    assert b"True os.terminal_size(columns=80, lines=24)" in pipe.stdout
    assert pipe.exit == (0, None)


async def test_descriptors_are_closed_once_and_never_someone_elses() -> None:
    """A descriptor closed twice may by then be another session's socket: here, sockets
    opened while the programs run take the numbers the programs' stdin pipes gave up."""
    survivors = []
    for _ in range(10):
        pipe = FakePipe()
        program = RunningProgram(pipe)  # type: ignore[arg-type]
        argv = [sys.executable, "-c", "import time; time.sleep(0.2)"]
        await program.start(GatewayProgram("admin", argv), None)
        program.write_eof()  # closes the child's stdin: its number is free again
        survivors.append(socket.socketpair())
        await asyncio.wait_for(pipe.closed.wait(), 20)
        del program
        gc.collect()
    for left, right in survivors:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
        left.close()
        right.close()

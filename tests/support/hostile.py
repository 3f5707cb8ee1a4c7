"""Hostile SSH clients for the login path: raw asyncssh clients that do what stock ones do not.

Each drives keyboard-interactive against the human lane and records what the
gateway did: the prompts it sent (with the time each arrived), and how the
connection ended (``denied``: a normal refusal; ``disconnected: ...``; ``ok``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import asyncssh


@dataclass
class Transcript:
    """What one hostile connection saw."""

    #: (prompt, monotonic time it arrived), in order.
    prompts: list[tuple[str, float]] = field(default_factory=list)
    outcome: str = ""
    #: Passwords this client sent.
    passwords_sent: int = 0

    def count(self, word: str) -> int:
        return sum(word in prompt for prompt, _ in self.prompts)


class ScriptedClient(asyncssh.SSHClient):
    """Answers each prompt from a script: ``answers[prompt word]`` is a list used in turn.

    An answer of ``None`` restarts keyboard-interactive instead of answering;
    ``"<disconnect>"`` closes the connection at that prompt, ``"<hang>"`` never
    answers; a list of answers sends that many answers to one prompt.
    """

    def __init__(self, answers: dict[str, list[object]], transcript: Transcript) -> None:
        self._answers = {word: list(values) for word, values in answers.items()}
        self._transcript = transcript
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def kbdint_auth_requested(self) -> str:
        return ""

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str] | None:
        text = prompts[0][0] if prompts else ""
        self._transcript.prompts.append((text, time.monotonic()))
        word = next((w for w in self._answers if w in text), None)
        if word is None or not self._answers[word]:
            return None  # nothing left to say: give up (the client moves on and fails)
        answer = self._answers[word].pop(0)
        if word == "Password":
            self._transcript.passwords_sent += 1
        if answer == "<hang>":
            await asyncio.sleep(3600)  # never answer: wait for the gateway's login timer
        if answer == "<disconnect>":
            assert self._conn is not None
            self._conn.close()
            await asyncio.sleep(3600)
        if answer is None:
            # Start keyboard-interactive over instead of answering: a new
            # USERAUTH_REQUEST, which makes the server drop the open one.
            assert self._conn is not None
            asyncio.get_running_loop().call_soon(self._conn.try_next_auth)
            await asyncio.sleep(3600)  # cancelled by the restart
        if isinstance(answer, list):
            return [str(part) for part in answer]
        return [str(answer)]


async def hostile_login(
    port: int,
    login: str,
    answers: dict[str, list[object]],
    *,
    source: str = "127.0.0.1",
    timeout: float = 60,
) -> Transcript:
    """Connect as ``login`` from ``source`` and follow ``answers`` (see :class:`ScriptedClient`)."""
    transcript = Transcript()
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            conn = await asyncssh.connect(
                "127.0.0.1", port, username=login, known_hosts=None,
                client_factory=lambda: ScriptedClient(answers, transcript),
                local_addr=(source, 0), preferred_auth="keyboard-interactive",
                client_keys=None, agent_path=None, password=None,
            )  # fmt: skip
            conn.close()
            transcript.outcome = "ok"
    except asyncssh.PermissionDenied:
        transcript.outcome = "denied"
    except asyncssh.DisconnectError as exc:
        transcript.outcome = f"disconnected: {exc.reason}"
    except (ConnectionError, OSError) as exc:
        transcript.outcome = f"disconnected: {exc}"
    except TimeoutError:
        transcript.outcome = f"still open after {time.monotonic() - started:.0f} s"
    return transcript


def open_idle(
    port: int, source: str, count: int, *, timeout: float = 10
) -> list[tuple[socket.socket, bytes]]:
    """Open ``count`` TCP connections from ``source`` that never speak SSH; each with the first
    line the gateway sent (its SSH version, or why it refused the connection)."""
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0))  # fmt: skip
        opened.append((sock, first_line(sock)))
    return opened


def first_line(sock: socket.socket) -> bytes:
    """The first line a server sent on ``sock`` (b"" if it closed without one)."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(256)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def close_all(opened: list[tuple[socket.socket, bytes]]) -> None:
    for sock, _ in opened:
        sock.close()

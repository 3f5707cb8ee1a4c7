"""The relay's data packets, taken and sent without asyncssh's copies, on real connections.

A real asyncssh server (the lanes' :class:`LaneServerConnection`) and a real
asyncssh client over the gateway's upstream tunnel (:class:`UpstreamTCP`),
both with the fast paths of :mod:`gateway.ssh.data_packets`, move data both
ways while keys are renewed every few hundred kilobytes, the peer's window is
small, stderr and EOF are interleaved, and every read is cut at odd places
(packets split across reads, lengths split in two). What arrives must be
what was sent, in order, and the fast paths must be the ones that carried it.
A byte changed on the wire must close the connection before any data it
touched is delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.packet import UInt32

from gateway.ssh import cipher_packets, data_packets, packet_io
from gateway.ssh.data_packets import ChannelDataReceiver, write_channel_data
from gateway.ssh.listener import listen_with_connection_class
from gateway.ssh.server_connection import LaneServerConnection

CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")
#: Small enough that a few megabytes see several key exchanges.
REKEY_BYTES = 300_000
SMALL_WINDOW = 100_000
PACKET_SIZE = 16 * 1024
STDERR_EVERY = 7


@pytest.fixture(autouse=True)
def gateway_ciphers() -> None:
    cipher_packets.install()  # as the gateway's event loop does; the fast path needs them


def pieces(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """``data`` cut into pieces of 1 byte to 70 KB, small ones often."""
    position = 0
    while position < len(data):
        size = rng.choice((1, 2, 3, 5, 17, 100, 4096, 33_000, 70_000))
        yield data[position : position + size]
        position += size


class Source(asyncssh.SSHServerSession[bytes]):
    """``send N``: N pseudo-random bytes in odd-sized writes, stderr between them;
    ``echo``: the client's input back, then its EOF; ``mutate``: see its test."""

    def __init__(self) -> None:
        self._chan: Any = None
        self._command = ""

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def session_started(self) -> None:
        if self._command == "mutate":
            write_channel_data(self._chan, bytes(3 * SMALL_WINDOW))  # more than the window
            queued = bytearray(b"original")
            write_channel_data(self._chan, queued)
            queued[:] = b"changed!"
            self._chan.write_eof()
            self._chan.exit(0)
        if self._command.startswith("send "):
            data = random.Random(1).randbytes(int(self._command.split()[1]))
            for number, piece in enumerate(pieces(data, random.Random(2))):
                write_channel_data(self._chan, piece)
                if number % STDERR_EVERY == 0:
                    self._chan.write_stderr(b"e%d;" % number)
            self._chan.write_eof()
            self._chan.exit(0)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        write_channel_data(self._chan, data)

    def eof_received(self) -> bool:
        self._chan.write_eof()
        self._chan.exit(0)
        return True


class Sink(asyncssh.SSHClientSession[bytes]):
    """Keeps stdout and stderr; reads slowly at times, so the server's window fills."""

    def __init__(self) -> None:
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._chan: Any = None
        self._reads = 0

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        (self.stderr if datatype == asyncssh.EXTENDED_DATA_STDERR else self.stdout).append(data)
        self._reads += 1
        if self._reads % 50 == 0:
            self._chan.pause_reading()
            asyncio.get_running_loop().call_later(0.01, self._chan.resume_reading)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


class Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no credentials: this is about the data, not sign-in

    def session_requested(self) -> Source:
        return Source()


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the packets each fast path carried."""
    counts = {"taken": 0, "sent": 0, "key exchanges": 0}
    take, send = ChannelDataReceiver._take, data_packets.send_channel_data_packet
    send_kexinit = SSHConnection._send_kexinit

    def counting_take(self: ChannelDataReceiver, *args: Any) -> bool:
        taken = take(self, *args)
        counts["taken"] += taken
        return taken

    def counting_send(*args: Any) -> None:
        counts["sent"] += 1
        send(*args)

    def counting_kexinit(self: SSHConnection) -> None:
        counts["key exchanges"] += 1
        send_kexinit(self)

    monkeypatch.setattr(SSHConnection, "_send_kexinit", counting_kexinit)
    monkeypatch.setattr(ChannelDataReceiver, "_take", counting_take)
    monkeypatch.setattr(data_packets, "send_channel_data_packet", counting_send)
    return counts


@pytest.fixture
def odd_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every read of both connections cut at odd places before the receivers see it;
    the sizes of the pieces, as they are cut."""
    rng = random.Random(3)
    cuts: list[int] = []

    def cutting(original: Callable[[Any, bytes], None]) -> Callable[..., None]:
        def data_received(self: Any, data: bytes, *args: Any) -> None:
            for piece in pieces(data, rng):
                cuts.append(len(piece))
                original(self, piece)

        return data_received

    monkeypatch.setattr(
        packet_io._UpstreamProtocol, "data_received",
        cutting(packet_io._UpstreamProtocol.data_received),
    )  # fmt: skip
    monkeypatch.setattr(
        LaneServerConnection, "data_received", cutting(LaneServerConnection.data_received)
    )
    return cuts


async def start_server(cipher: str) -> tuple[asyncssh.SSHAcceptor, int]:
    acceptor = await listen_with_connection_class(
        "127.0.0.1", 0,
        connection_class=LaneServerConnection,
        server_factory=Server,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encryption_algs=[cipher],
        rekey_bytes=REKEY_BYTES,
        encoding=None,
        line_editor=False,
    )  # fmt: skip
    return acceptor, acceptor.sockets[0].getsockname()[1]


async def connect(port: int, cipher: str) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", port,
        username="relay", known_hosts=None, client_keys=None, agent_path=None, config=None,
        encryption_algs=[cipher], rekey_bytes=REKEY_BYTES, tunnel=packet_io.UpstreamTCP(),
    )  # fmt: skip


async def run(conn: asyncssh.SSHClientConnection, command: str, data: bytes = b"") -> Sink:
    chan, sink = await conn.create_session(
        Sink, command, encoding=None, window=SMALL_WINDOW, max_pktsize=PACKET_SIZE
    )
    for piece in pieces(data, random.Random(4)):
        write_channel_data(chan, piece)
    if data:
        chan.write_eof()
    await asyncio.wait_for(chan.wait_closed(), 60)
    assert chan.get_exit_status() == 0
    return sink


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("reads", ["whole", "odd"])
async def test_data_arrives_whole_and_in_order_through_both_fast_paths(
    cipher: str, reads: str, spy: dict[str, int], request: pytest.FixtureRequest
) -> None:
    cuts = request.getfixturevalue("odd_reads") if reads == "odd" else []
    acceptor, port = await start_server(cipher)
    try:
        async with await connect(port, cipher) as conn:
            size = 3_000_000
            sink = await run(conn, f"send {size}")
            sent = random.Random(1).randbytes(size)
            received = b"".join(sink.stdout)
            assert len(received) == size
            assert hashlib.sha256(received).digest() == hashlib.sha256(sent).digest()
            stderr_writes = len(list(pieces(sent, random.Random(2))))
            expected_stderr = b"".join(
                b"e%d;" % number for number in range(0, stderr_writes, STDERR_EVERY)
            )
            assert b"".join(sink.stderr) == expected_stderr
            downloaded = dict(spy)
            # Most of it went through the fast paths (the rest: around each key exchange).
            assert downloaded["taken"] > size // PACKET_SIZE // 2
            assert downloaded["sent"] > size // PACKET_SIZE // 2

            upload = random.Random(5).randbytes(2_000_000)
            echoed = await run(conn, "echo", upload)
            assert b"".join(echoed.stdout) == upload
            assert spy["taken"] - downloaded["taken"] > 2 * len(upload) // PACKET_SIZE // 2
            if reads == "odd":  # lengths were split too
                assert cuts.count(1) > 100 and cuts.count(3) > 100
            # Keys were renewed again and again while data flowed (two sides, two at the start).
            assert spy["key exchanges"] > 2 * 2 + 2 * (size + len(upload)) // REKEY_BYTES // 2
    finally:
        acceptor.close()


@pytest.mark.parametrize("cipher", CIPHERS)
async def test_asyncssh_takes_over_when_it_logs_data_and_the_bytes_still_arrive(
    cipher: str, spy: dict[str, int]
) -> None:
    asyncssh.set_debug_level(2)
    acceptor, port = await start_server(cipher)
    try:
        async with await connect(port, cipher) as conn:
            sink = await run(conn, "send 500000")
            assert b"".join(sink.stdout) == random.Random(1).randbytes(500_000)
    finally:
        acceptor.close()
        asyncssh.set_debug_level(1)
    assert spy["taken"] == spy["sent"] == 0


class Tamperer:
    """A TCP hop that flips one byte of one direction's stream, deep in the data."""

    def __init__(self, server_port: int, flip_at: int, *, toward_client: bool) -> None:
        self._server_port = server_port
        self._flip_at = flip_at
        self._toward_client = toward_client
        self.flipped = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._server_port)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, flip: bool
        ) -> None:
            seen = 0
            while chunk := await source.read(65536):
                if flip and not self.flipped and seen + len(chunk) > self._flip_at:
                    changed = bytearray(chunk)
                    changed[self._flip_at - seen] ^= 0x01
                    chunk = bytes(changed)
                    self.flipped = True
                seen += len(chunk)
                sink.write(chunk)
                await sink.drain()
            sink.close()

        await asyncio.gather(
            pump(reader, up_writer, not self._toward_client),
            pump(up_reader, writer, self._toward_client),
            return_exceptions=True,
        )


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("toward", ["client", "server"])
@pytest.mark.parametrize("reads", ["whole", "odd"])
async def test_a_changed_byte_closes_the_connection_and_delivers_nothing_it_touched(
    cipher: str, toward: str, reads: str, request: pytest.FixtureRequest
) -> None:
    """Toward the client: the server's output is changed on its way (the client's
    receiver must refuse it). Toward the server: the client's upload is (the server's)."""
    if reads == "odd":
        request.getfixturevalue("odd_reads")
    acceptor, port = await start_server(cipher)
    tamperer = Tamperer(port, flip_at=1_000_000, toward_client=toward == "client")
    hop = await asyncio.start_server(tamperer.handle, "127.0.0.1", 0)
    size = 3_000_000
    sent = random.Random(1).randbytes(size)
    try:
        conn = await connect(hop.sockets[0].getsockname()[1], cipher)
        if toward == "client":
            chan, sink = await conn.create_session(Sink, f"send {size}", encoding=None)
        else:
            chan, sink = await conn.create_session(Sink, "echo", encoding=None)
            for piece in pieces(sent, random.Random(4)):
                write_channel_data(chan, piece)
        error = await asyncio.wait_for(sink.closed, 30)
        received = b"".join(sink.stdout)
        assert tamperer.flipped
        assert isinstance(error, asyncssh.DisconnectError), error
        assert "MAC" in str(error.reason)
        assert 0 < len(received) < size
        assert received == sent[: len(received)]
        conn.close()
    finally:
        hop.close()
        acceptor.close()


@pytest.mark.parametrize("cipher", CIPHERS)
async def test_bytes_written_are_sent_as_they_were_when_written(cipher: str) -> None:
    """A bytearray queued behind a full window and changed afterwards goes out unchanged."""
    acceptor, port = await start_server(cipher)
    try:
        async with await connect(port, cipher) as conn:
            sink = await run(conn, "mutate")
            assert b"".join(sink.stdout) == bytes(3 * SMALL_WINDOW) + b"original"
    finally:
        acceptor.close()


# -- a hostile peer: hand-built packets, the fast path against asyncssh alone ----------


class Echo(asyncssh.SSHServerSession[bytes]):
    """Sends back what it gets; ``raise`` in the data makes it fail."""

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def exec_requested(self, command: str) -> bool:
        return True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if b"raise" in data:
            raise ValueError("the session failed on this data")
        write_channel_data(self._chan, data)


class EchoServer(Server):
    def session_requested(self) -> Echo:  # type: ignore[override]
        return Echo()


def window_adjust(channel: int, trailing: bytes = b"") -> bytes:
    """A window adjust's plaintext after its length (trailing: bytes after its payload)."""
    return (
        bytes([8, MSG_CHANNEL_WINDOW_ADJUST]) + UInt32(channel) + UInt32(1000) + trailing + bytes(8)
    )


def data_packet(
    channel: int, data: bytes, *, padding: int = 8, claimed: int | None = None
) -> bytes:
    """A channel data packet's plaintext after its length, padding as given."""
    length = len(data) if claimed is None else claimed
    body = bytes([MSG_CHANNEL_DATA]) + UInt32(channel) + UInt32(length) + data
    return bytes([padding]) + body + bytes(padding)


HOSTILE_PACKETS: dict[str, Callable[[Any], bytes]] = {
    "well formed": lambda chan: data_packet(chan._send_chan, b"fine"),
    "padding 0": lambda chan: data_packet(chan._send_chan, b"no padding", padding=0),
    "padding 2": lambda chan: data_packet(chan._send_chan, b"short padding", padding=2),
    "empty packet": lambda chan: b"",
    "type byte only": lambda chan: bytes([4, MSG_CHANNEL_DATA]) + bytes(4),
    "unknown channel": lambda chan: data_packet(chan._send_chan + 7, b"who?"),
    "length claims more": lambda chan: data_packet(chan._send_chan, b"short", claimed=50),
    "length claims less": lambda chan: data_packet(chan._send_chan, b"trailing", claimed=3),
    "beyond the window": lambda chan: data_packet(chan._send_chan, bytes(chan._send_window + 1)),
    "session raises": lambda chan: data_packet(chan._send_chan, b"please raise"),
    "window adjust": lambda chan: window_adjust(chan._send_chan),
    "window adjust, unknown channel": lambda chan: window_adjust(chan._send_chan + 7),
    "window adjust, trailing bytes": lambda chan: window_adjust(chan._send_chan, b"xyz"),
}
#: What comes back from the cases that leave the connection open (the others close it).
STAYS_OPEN = {
    "well formed": b"fineMARK",
    "padding 2": b"short paddingMARK",
    "window adjust": b"MARK",
}


async def hostile_exchange(cipher: str, build: Callable[[Any], bytes]) -> tuple[bytes, str]:
    """Send one hand-built packet after a session opened, then a marker; what came back, and
    how the connection ended (or 'open')."""
    acceptor = await listen_with_connection_class(
        "127.0.0.1", 0, connection_class=LaneServerConnection, server_factory=EchoServer,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encryption_algs=[cipher], encoding=None, line_editor=False,
    )  # fmt: skip
    try:
        conn = await connect(acceptor.sockets[0].getsockname()[1], cipher)
        chan, sink = await conn.create_session(Sink, "echo", encoding=None)
        raw: Any = conn
        plain = build(chan)
        sealed, mac = raw._send_encryption.encrypt_packet(raw._send_seq, UInt32(len(plain)), plain)
        raw._send(sealed + mac)
        raw._send_seq = (raw._send_seq + 1) & 0xFFFFFFFF
        chan.write(b"MARK")  # once it is back, the packet before it was handled

        async def until_marked() -> None:
            while not b"".join(sink.stdout).endswith(b"MARK"):
                await asyncio.sleep(0.01)

        marked = asyncio.ensure_future(until_marked())
        await asyncio.wait([marked, sink.closed], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        marked.cancel()
        ended = "open"
        if sink.closed.done():
            error = sink.closed.result()
            ended = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
        conn.close()
        return b"".join(sink.stdout), ended
    finally:
        acceptor.close()


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("case", HOSTILE_PACKETS)
async def test_a_hostile_packet_gets_what_asyncssh_alone_gives_it(
    cipher: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = await hostile_exchange(cipher, HOSTILE_PACKETS[case])
    monkeypatch.setattr(ChannelDataReceiver, "_take", lambda self, *args: False)
    alone = await hostile_exchange(cipher, HOSTILE_PACKETS[case])
    assert fast == alone
    if case in STAYS_OPEN:
        assert fast == (STAYS_OPEN[case], "open")
    else:
        assert fast[1] != "open" and b"MARK" not in fast[0]

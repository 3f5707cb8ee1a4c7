"""The relay's socket side: packets of one loop turn in one write, large reads in pieces."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.ssh.packet_io import INPUT_PIECE, BatchedTransport, feed_in_pieces


class RecordingTransport:
    """Stands in for uvloop's transport: keeps what each call handed over."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def writelines(self, pieces: list[bytes]) -> None:
        self.calls.append(("writelines", list(pieces)))

    def write(self, data: bytes) -> None:  # pragma: no cover - must not be used
        self.calls.append(("write", data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_packets_written_in_one_turn_go_out_together_and_in_order() -> None:
    raw = RecordingTransport()
    batched = BatchedTransport(raw)  # type: ignore[arg-type]
    for packet in (b"ignore", b"data-1", b"data-2"):
        batched.write(packet)
    assert raw.calls == []  # nothing before the turn ends
    await asyncio.sleep(0)
    assert raw.calls == [("writelines", [b"ignore", b"data-1", b"data-2"])]
    batched.write(b"next")
    await asyncio.sleep(0)
    assert raw.calls[-1] == ("writelines", [b"next"])
    assert batched.get_extra_info("peername") == "info:peername"


async def test_close_and_abort_send_what_was_written_first() -> None:
    for ending in ("close", "abort"):
        raw = RecordingTransport()
        batched = BatchedTransport(raw)  # type: ignore[arg-type]
        batched.write(b"disconnect: too many authentication failures")
        getattr(batched, ending)()
        assert raw.calls == [
            ("writelines", [b"disconnect: too many authentication failures"]),
            (ending, None),
        ]
        await asyncio.sleep(0)  # the flush scheduled for the turn finds nothing left
        assert len(raw.calls) == 2


async def test_nothing_is_written_to_a_closing_transport() -> None:
    raw = RecordingTransport()
    batched = BatchedTransport(raw)  # type: ignore[arg-type]
    batched.write(b"late")
    raw.closing = True
    await asyncio.sleep(0)
    assert raw.calls == []


def test_a_large_read_is_fed_in_pieces_that_add_up_to_it() -> None:
    fed: list[bytes] = []
    data = bytes(range(256)) * 1100  # 281,600 bytes: uvloop's largest read and more
    feed_in_pieces(lambda piece: fed.append(bytes(piece)), data)
    assert b"".join(fed) == data
    assert max(map(len, fed)) == INPUT_PIECE and len(fed) == -(-len(data) // INPUT_PIECE)
    small: list[bytes] = []
    feed_in_pieces(small.append, b"keystroke")
    assert small == [b"keystroke"]

"""The gateway's AEAD packets against asyncssh's own shims, the oracle, both ways.

Each side seals a run of packets as asyncssh's ``send_packet`` would
(length header, then padding length, payload and padding), the other side
opens them as asyncssh's ``_recv_packet`` would (first block, the rest, the
MAC field), and the bytes on the wire must be the same.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from asyncssh import encryption as asyncssh_encryption
from asyncssh.encryption import ChachaEncryption, GCMEncryption

from gateway.ssh import cipher_packets
from gateway.ssh.cipher_packets import AesGcmPackets, ChachaPackets

BLOCK = 16
HEADER = 4


def wire(encryption: asyncssh_encryption.Encryption, seq: int, payload: bytes) -> bytes:
    """What asyncssh's send_packet puts on the socket for ``payload``."""
    padding = -(HEADER + 1 + len(payload)) % BLOCK or BLOCK
    padding += BLOCK if padding < 4 else 0
    packet = bytes([padding]) + payload + os.urandom(padding)
    header = len(packet).to_bytes(4, "big")
    sealed, mac = encryption.encrypt_packet(seq, header, packet)
    return sealed + mac


def opened(encryption: asyncssh_encryption.Encryption, seq: int, data: bytes) -> bytes | None:
    """What asyncssh's _recv_pkthdr and _recv_packet make of ``data``: the payload, or None."""
    first = data[:BLOCK]
    first, length = encryption.decrypt_header(seq, first, HEADER)
    size = int.from_bytes(length, "big")
    rest_end = HEADER + size
    plain = encryption.decrypt_packet(seq, first, data[BLOCK:rest_end], HEADER, data[rest_end:])
    if plain is None:
        return None
    return plain[1 : len(plain) - plain[0]]


@pytest.mark.parametrize("cipher_name,key_size", [("aes128-gcm", 16), ("aes256-gcm", 32)])
def test_packets_match_asyncssh_in_both_directions(cipher_name: str, key_size: int) -> None:
    key, iv = os.urandom(key_size), os.urandom(12)
    # An IV whose counter is about to wrap: the 64-bit invocation counter rolls over.
    wrapping_iv = iv[:4] + (2**64 - 3).to_bytes(8, "big")
    for start in (iv, wrapping_iv):
        ours_out, theirs_in = (
            AesGcmPackets.new(cipher_name, key, start),
            GCMEncryption.new(cipher_name, key, start),
        )
        theirs_out, ours_in = (
            GCMEncryption.new(cipher_name, key, start),
            AesGcmPackets.new(cipher_name, key, start),
        )
        for seq, size in enumerate(PAYLOAD_SIZES):
            payload = os.urandom(size)
            sent = wire(ours_out, seq, payload)
            assert opened(theirs_in, seq, sent) == payload
            assert opened(ours_in, seq, wire(theirs_out, seq, payload)) == payload


def test_a_tampered_packet_is_refused_and_the_counter_still_advances() -> None:
    key, iv = os.urandom(16), os.urandom(12)
    sender, receiver = GCMEncryption.new("aes128-gcm", key, iv), AesGcmPackets(key, iv)
    sent = bytearray(wire(sender, 0, b"hello"))
    sent[20] ^= 1
    assert opened(receiver, 0, bytes(sent)) is None
    # asyncssh would drop the connection here; the counter is consumed as its shim does.
    assert opened(receiver, 1, wire(sender, 1, b"again")) == b"again"


PAYLOAD_SIZES = [0, 1, 15, 16, 17, 100, 4096, 32768, 35000, 7]


def test_chacha_packets_match_asyncssh_in_both_directions() -> None:
    key = os.urandom(64)
    ours_out, theirs_in = (
        ChachaPackets.new("chacha20-poly1305", key, b""),
        ChachaEncryption.new("chacha20-poly1305", key, b""),
    )
    theirs_out, ours_in = (
        ChachaEncryption.new("chacha20-poly1305", key, b""),
        ChachaPackets.new("chacha20-poly1305", key, b""),
    )
    # Sequence numbers near the 32-bit wrap as well as from 0.
    for seq in [*range(len(PAYLOAD_SIZES)), 2**32 - 2, 2**32 - 1]:
        payload = os.urandom(PAYLOAD_SIZES[seq % len(PAYLOAD_SIZES)])
        assert opened(theirs_in, seq, wire(ours_out, seq, payload)) == payload
        assert opened(ours_in, seq, wire(theirs_out, seq, payload)) == payload


def test_a_tampered_chacha_packet_is_refused() -> None:
    key = os.urandom(64)
    sender, receiver = ChachaEncryption.new("chacha20-poly1305", key, b""), ChachaPackets(key)
    for position in (2, 10, 40):  # the length, the packet, the tag
        sent = bytearray(wire(sender, 5, os.urandom(20)))
        sent[position if position < 30 else len(sent) - 3] ^= 1
        assert opened(receiver, 5, bytes(sent)) is None


@pytest.mark.parametrize("make", [
    lambda: (GCMEncryption.new("aes128-gcm", k := os.urandom(16), iv := os.urandom(12)),
             AesGcmPackets(k, iv)),
    lambda: (ChachaEncryption.new("chacha20-poly1305", k := os.urandom(64), b""),
             ChachaPackets(k)),
], ids=["aes-gcm", "chacha20-poly1305"])  # fmt: skip
def test_a_whole_packet_opened_where_it_lies_changes_nothing_until_taken(make: Any) -> None:
    """open_packet (gateway.ssh.data_packets) may open a packet that asyncssh then opens
    again: only packet_taken moves the direction on."""
    sender, receiver = make()
    for seq, size in enumerate(PAYLOAD_SIZES):
        payload = os.urandom(size)
        sent = wire(sender, seq, payload)
        length = receiver.packet_length(seq, memoryview(sent)[:HEADER])
        assert length == len(sent) - HEADER - 16
        plain = receiver.open_packet(seq, memoryview(sent))
        assert plain is not None and plain[1 : len(plain) - plain[0]] == payload
        if seq % 2:  # taken here
            receiver.packet_taken()
        else:  # handed to asyncssh after all: it opens the same packet itself
            assert opened(receiver, seq, sent) == payload
    tampered = bytearray(wire(sender, len(PAYLOAD_SIZES), b"x" * 64))
    tampered[30] ^= 1
    assert receiver.open_packet(len(PAYLOAD_SIZES), memoryview(bytes(tampered))) is None


def test_install_replaces_only_the_aead_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(asyncssh_encryption._enc_params)
    monkeypatch.setattr(asyncssh_encryption, "_enc_params", table)
    before = dict(table)
    cipher_packets.install()
    replaced = {b"aes128-gcm@openssh.com": AesGcmPackets, b"aes256-gcm@openssh.com": AesGcmPackets,
                b"chacha20-poly1305@openssh.com": ChachaPackets}  # fmt: skip
    for algorithm, entry in table.items():
        if algorithm in replaced:
            assert entry == (replaced[algorithm], before[algorithm][1])
        else:
            assert entry == before[algorithm]

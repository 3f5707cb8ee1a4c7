"""Packet encryption for asyncssh's AEAD ciphers, without per-packet set-up and copies.

asyncssh's shims (2.24.1, pinned) are written for clarity: for every packet
the AES-GCM one builds a new ``AESGCM`` object (a new AES key schedule),
and the ChaCha20-Poly1305 one three ``ChaCha20`` ciphers; both copy each
packet three or four times around the calls (joining header and data to
authenticate them, splitting ciphertext and tag, joining them again to
send). At a gigabyte relayed that was a quarter of the relay's time
(py-spy), most of it not the ciphers' own work. The classes here do the
same cryptography with one cipher object per key (AES-GCM's, and ChaCha20's
keystreams moved to each packet's nonce), feed the MAC in pieces, and hand
asyncssh the sealed packet in one piece: the tag travels right after the
ciphertext, so the "MAC" asyncssh appends is empty and appending it copies
nothing.

The wire formats are unchanged:

- ``aes128-gcm@openssh.com`` and ``aes256-gcm@openssh.com`` (RFC 5647 as
  OpenSSH uses it): the 4-byte length in the clear as additional data; the
  nonce is the 4-byte fixed IV and a 64-bit big-endian invocation counter
  that starts at the IV's last 8 bytes and goes up by one per packet.
- ``chacha20-poly1305@openssh.com`` (OpenSSH's PROTOCOL.chacha20poly1305):
  of the 64-byte key, the second half encrypts the length and the first
  half the packet from block 1 on; block 0 of the latter gives the Poly1305
  key; the tag covers the encrypted length and packet; the nonce is the
  packet's sequence number.

``tests/unit/test_cipher_packets.py`` checks every packet against asyncssh's
own shims in both directions. :func:`install` puts these classes in
asyncssh's table of encryption algorithms for the process; the gateway does
so when its event loop starts.
"""

from __future__ import annotations

from typing import Self

from asyncssh import encryption as asyncssh_encryption
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

_COUNTER_MASK = (1 << 64) - 1
#: ChaCha20's first block counter (little-endian, as cryptography takes it before the nonce).
_BLOCK_0 = bytes(8)
#: One ChaCha20 block: encrypting it yields the Poly1305 key and moves the stream to block 1.
_ZERO_BLOCK = bytes(64)
_POLY1305_KEY_SIZE = 32
#: A packet's length field, and the tag after it (both AEAD ciphers).
LENGTH_SIZE = 4
TAG_SIZE = 16


class _KeyedByAsyncssh:
    """asyncssh's constructor for a direction's encryption, after each key exchange."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        raise NotImplementedError

    @classmethod
    def new(
        cls,
        cipher_name: str,
        key: bytes,
        iv: bytes,
        mac_alg: bytes = b"",
        mac_key: bytes = b"",
        etm: bool = False,
    ) -> Self:
        """What asyncssh calls (the MAC arguments do not apply to AEAD ciphers)."""
        return cls(key, iv)


class AeadPackets(_KeyedByAsyncssh):
    """What :mod:`gateway.ssh.data_packets` needs to open a whole packet where it lies.

    :meth:`open_packet` changes no state, so a packet it opens may still be
    handed to asyncssh, which opens it again; :meth:`packet_taken` moves the
    direction on once the caller has taken the packet instead.
    """

    def packet_length(self, seq: int, length: memoryview) -> int:
        """The packet length a packet's first four bytes on the wire give."""
        raise NotImplementedError

    def open_packet(self, seq: int, sealed: memoryview) -> bytes | None:
        """The plaintext after the length of a whole sealed packet (length, body, tag),
        or None if the tag does not verify."""
        raise NotImplementedError

    def packet_taken(self) -> None:
        """The packet last opened was handled without asyncssh (see the class docstring)."""


class AesGcmPackets(AeadPackets, asyncssh_encryption.GCMEncryption):
    """One direction of an SSH connection's AES-GCM (see the module docstring)."""

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    def _next_nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _COUNTER_MASK
        return nonce

    def encrypt_packet(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
        """The length header, ciphertext and tag as one piece; an empty MAC."""
        return header + self._aead.encrypt(self._next_nonce(), packet, header), b""

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        """The plaintext after the length header, or None if the tag does not verify."""
        nonce = self._next_nonce()  # used up whether or not the packet verifies
        sealed = b"".join((memoryview(first)[header_len:], rest, mac))
        try:
            return self._aead.decrypt(nonce, sealed, first[:header_len])
        except InvalidTag:
            return None

    def packet_length(self, seq: int, length: memoryview) -> int:
        """The length travels in the clear (it is the additional data)."""
        return int.from_bytes(length, "big")

    def open_packet(self, seq: int, sealed: memoryview) -> bytes | None:
        """Decrypted with the next nonce, which :meth:`packet_taken` then uses up."""
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        try:
            return self._aead.decrypt(nonce, sealed[LENGTH_SIZE:], sealed[:LENGTH_SIZE])
        except InvalidTag:
            return None

    def packet_taken(self) -> None:
        self._counter = (self._counter + 1) & _COUNTER_MASK


class ChachaPackets(AeadPackets, asyncssh_encryption.ChachaEncryption):
    """One direction of an SSH connection's ChaCha20-Poly1305 (see the module docstring)."""

    def __init__(self, key: bytes, iv: bytes = b"") -> None:  # the nonce is the sequence number
        half = len(key) // 2
        # One keystream per key, moved to each packet's nonce (reset_nonce): building a
        # ChaCha20 cipher per packet was a third of sealing a 32 KiB packet.
        self._length_keystream = Cipher(ChaCha20(key[half:], bytes(16)), None).encryptor()
        self._packet_keystream = Cipher(ChaCha20(key[:half], bytes(16)), None).encryptor()

    def _length_cipher(self, nonce: bytes) -> CipherContext:
        """The length's keystream at ``nonce``, valid until the next call."""
        self._length_keystream.reset_nonce(_BLOCK_0 + nonce)
        return self._length_keystream

    def _packet_stream(self, nonce: bytes) -> tuple[CipherContext, Poly1305]:
        """The packet's keystream, past block 0 (valid until the next call), and a
        Poly1305 keyed from block 0."""
        stream = self._packet_keystream
        stream.reset_nonce(_BLOCK_0 + nonce)
        mac = Poly1305(stream.update(_ZERO_BLOCK)[:_POLY1305_KEY_SIZE])
        return stream, mac

    def encrypt_packet(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
        """The encrypted length, packet and tag as one piece; an empty MAC."""
        nonce = seq.to_bytes(8, "big")
        length = self._length_cipher(nonce).update(header)
        stream, mac = self._packet_stream(nonce)
        sealed = stream.update(packet)
        mac.update(length)
        mac.update(sealed)
        return b"".join((length, sealed, mac.finalize())), b""

    def decrypt_header(self, seq: int, first_block: bytes, header_len: int) -> tuple[bytes, bytes]:
        """The first block as it came, and the packet length decrypted."""
        cipher = self._length_cipher(seq.to_bytes(8, "big"))
        return first_block, cipher.update(first_block[:header_len])

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        """The plaintext after the length, or None if the tag does not verify."""
        stream, poly = self._packet_stream(seq.to_bytes(8, "big"))
        poly.update(first)
        poly.update(rest)
        try:
            poly.verify(mac)
        except InvalidSignature:
            return None
        return stream.update(b"".join((memoryview(first)[header_len:], rest)))

    def packet_length(self, seq: int, length: memoryview) -> int:
        return int.from_bytes(self._length_cipher(seq.to_bytes(8, "big")).update(length), "big")

    def open_packet(self, seq: int, sealed: memoryview) -> bytes | None:
        """Opened with keys from the sequence number alone: nothing to move on."""
        stream, poly = self._packet_stream(seq.to_bytes(8, "big"))
        poly.update(sealed[:-TAG_SIZE])
        try:
            poly.verify(bytes(sealed[-TAG_SIZE:]))
        except InvalidSignature:
            return None
        return stream.update(sealed[LENGTH_SIZE:-TAG_SIZE])


#: The algorithms replaced: asyncssh's name for each, the class, and asyncssh's cipher name.
REPLACED = {
    b"aes128-gcm@openssh.com": (AesGcmPackets, "aes128-gcm"),
    b"aes256-gcm@openssh.com": (AesGcmPackets, "aes256-gcm"),
    b"chacha20-poly1305@openssh.com": (ChachaPackets, "chacha20-poly1305"),
}


def install() -> None:
    """Use these classes for their algorithms on every connection this process makes from now."""
    table = asyncssh_encryption._enc_params  # noqa: SLF001 - asyncssh has no API to replace one
    for algorithm, entry in REPLACED.items():
        if algorithm in table:
            table[algorithm] = entry

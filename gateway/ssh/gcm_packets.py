"""AES-GCM packet encryption for asyncssh without a key schedule and four copies per packet.

asyncssh's GCM shim (2.24.1, pinned) builds a new ``AESGCM`` object, and so
a new AES key schedule, for every packet it seals or opens, and copies each
packet three or four times around the call (joining ciphertext and tag,
splitting them again, joining them once more to send). At a gigabyte
relayed that was a quarter of the relay's time (py-spy), most of it not the
cipher's. :class:`AesGcmPackets` keeps one ``AESGCM`` per direction and
key, keeps the invocation counter as an integer, and hands asyncssh the
sealed packet in one piece (the tag travels right after the ciphertext, so
the "MAC" asyncssh appends is empty and appending it copies nothing).

The wire format is RFC 5647 as OpenSSH uses it, unchanged: the 4-byte
length is sent in the clear as additional data, the 12-byte nonce is the
4-byte fixed IV and a 64-bit big-endian invocation counter that starts at
the IV's last 8 bytes and goes up by one per packet, in both directions.
``tests/unit/test_gcm_packets.py`` checks every packet against asyncssh's
own shim in both directions.

:func:`install` puts it in asyncssh's table of encryption algorithms for the
process; the gateway does so when its event loop starts.
"""

from __future__ import annotations

from asyncssh import encryption as asyncssh_encryption
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The algorithms replaced, with the cipher names asyncssh's table gives them.
GCM_ALGORITHMS = {
    b"aes128-gcm@openssh.com": "aes128-gcm",
    b"aes256-gcm@openssh.com": "aes256-gcm",
}
_COUNTER_MASK = (1 << 64) - 1


class AesGcmPackets(asyncssh_encryption.GCMEncryption):
    """One direction of an SSH connection's AES-GCM (see the module docstring)."""

    def __init__(self, key: bytes, iv: bytes) -> None:  # noqa: D107 - the class says it
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    @classmethod
    def new(
        cls,
        cipher_name: str,
        key: bytes,
        iv: bytes,
        mac_alg: bytes = b"",
        mac_key: bytes = b"",
        etm: bool = False,
    ) -> AesGcmPackets:
        """What asyncssh calls to key a direction after each key exchange."""
        return cls(key, iv)

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


def install() -> None:
    """Use :class:`AesGcmPackets` for AES-GCM on every connection this process makes from now."""
    table = asyncssh_encryption._enc_params  # noqa: SLF001 - asyncssh has no API to replace one
    for algorithm, cipher_name in GCM_ALGORITHMS.items():
        if algorithm in table:
            table[algorithm] = (AesGcmPackets, cipher_name)

"""AES-256-CTR encryption of zone payloads, with counter blocks that never repeat under a key.

A content key belongs to one camera, one epoch and one zone class, and is random (never derived
from a password). Within it, a frame's sequence number is unique, and a zone's index is unique
within its frame, so the initial counter block

    seq (8 bytes, big-endian) || zone index (4 bytes) || block counter (4 bytes, starts at 0)

is unique per (frame, zone), and the 32-bit block counter in the low bits cannot run into the
next zone's blocks as long as one zone is under 2**32 blocks (64 GiB), which ``encrypt_zone``
enforces. Version-2 frames (H.264 mode) encrypt one access unit per zone-class stream
instead; its counter block is

    seq (8 bytes) || 0x80000000 + zone class (4 bytes) || block counter (4 bytes, from 0)

whose middle word is never a zone index in use (those stay below ``MAX_ZONES`` = 256, a
version-1 frame has at most that many), so stream and zone blocks never meet under one key
even if a key served both kinds of frame. CTR is malleable: integrity comes from the frame signature, which covers the SHA-256
of every ciphertext (common.signing), and viewers check it before decrypting.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CONTENT_KEY_LEN = 32
BLOCK_LEN = 16
MAX_BLOCKS_PER_ZONE = 2**32
MAX_ZONE_INDEX = 2**32 - 1
STREAM_INDEX_BASE = 0x80000000  # version 2: the middle word of a stream AU's counter block


def new_content_key() -> bytes:
    """A fresh random AES-256 key from the OS CSPRNG."""
    return os.urandom(CONTENT_KEY_LEN)


def counter_block(seq: int, zone_index: int) -> bytes:
    """The initial CTR counter block for zone ``zone_index`` of frame ``seq``."""
    if not 0 <= seq < 2**64:
        raise ValueError(f"sequence number {seq} does not fit in 64 bits")
    if not 0 <= zone_index <= MAX_ZONE_INDEX:
        raise ValueError(f"zone index {zone_index} does not fit in 32 bits")
    return struct.pack(">QII", seq, zone_index, 0)


def stream_counter_block(seq: int, zone_class: int) -> bytes:
    """The initial CTR counter block for the class-``zone_class`` stream AU of frame ``seq``."""
    if not 1 <= zone_class <= 0xFF:
        raise ValueError(f"zone class {zone_class} is not a class number (1..255)")
    return counter_block(seq, STREAM_INDEX_BASE + zone_class)


def _ctr(key: bytes, initial_block: bytes, data: bytes) -> bytes:
    if len(key) != CONTENT_KEY_LEN:
        raise ValueError(f"content key must be {CONTENT_KEY_LEN} bytes, got {len(key)}")
    if (len(data) + BLOCK_LEN - 1) // BLOCK_LEN > MAX_BLOCKS_PER_ZONE:
        raise ValueError(f"zone payload of {len(data)} bytes would wrap the 32-bit block counter")
    ctx = Cipher(algorithms.AES(key), modes.CTR(initial_block)).encryptor()
    return ctx.update(data) + ctx.finalize()


def encrypt_zone(key: bytes, seq: int, zone_index: int, payload: bytes) -> bytes:
    return _ctr(key, counter_block(seq, zone_index), payload)


def decrypt_zone(key: bytes, seq: int, zone_index: int, ciphertext: bytes) -> bytes:
    """Inverse of ``encrypt_zone``. Check the frame signature first: CTR authenticates nothing."""
    return _ctr(key, counter_block(seq, zone_index), ciphertext)


def encrypt_stream_au(key: bytes, seq: int, zone_class: int, au: bytes) -> bytes:
    """Encrypt frame ``seq``'s access unit of the class-``zone_class`` stream (version 2)."""
    return _ctr(key, stream_counter_block(seq, zone_class), au)


def decrypt_stream_au(key: bytes, seq: int, zone_class: int, ciphertext: bytes) -> bytes:
    """Inverse of ``encrypt_stream_au``. Check the frame signature first (``verify_frame``
    compares the SHA-256 of the ciphertext): CTR authenticates nothing."""
    return _ctr(key, stream_counter_block(seq, zone_class), ciphertext)

"""glibc's allocator, set for each node's allocation pattern (glibc only; elsewhere no-op).

**The store: memory flat after logins and bursts** (``pin_mmap_threshold``,
``trim_periodically``).

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start) with their own
``mmap`` and gives them back on ``free``, but it raises the threshold to the size of every such
block it frees, up to 32 MiB. The store's first login frees scrypt's 16 MiB work area (n=2**14,
r=8, store_node/accounts.py), so from then on scrypt's buffer and every frame of 128 KiB-16 MiB
(a 720p JPEG frame is ~120-200 KiB) come from the heap, where a burst leaves them resident:
measured with ``python bench/load.py --seconds 80 --faults``, a restarted store's anonymous
memory went 77 -> 100 MB in the two seconds of one viewer's login and stayed there, and the
120 s fault run ended at 1.98x the memory of its first quarter. Setting the threshold
explicitly turns the adjustment off: large blocks are mapped and unmapped again.

The store allocates a few hundred KiB per frame at 10s of frames a second, where a ``mmap``
per block costs nothing measurable.

**The camera: frame buffers reused** (``keep_frame_buffers``). The camera allocates and frees
several multi-megabyte numpy arrays per frame (the decoded frame, its copy, colour
conversions, canvases; 6 MB each at 1080p). Mapped and unmapped every frame, each costs its
page faults again on first touch: a 1080p copy + conversion + channel shuffle took 4.4 ms
against 1.8 ms with the blocks kept in the heap (measured 2026-11-30; camera CPU per frame
in docs/PERFORMANCE.md). The camera therefore raises the threshold above a 4K frame and keeps
freed heap tops instead of trimming them: its per-frame blocks are the same sizes frame after
frame, so the heap reaches a plateau and stays there.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

from veilcam.common.lifecycle import StopFlag

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value
FRAME_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # above a 4K BGR frame (24.9 MB); glibc's max
FRAME_TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    """The process's own symbols (glibc among them), or None off glibc. ``CDLL(None)`` and
    not ``find_library``, which runs ``ldconfig`` in a subprocess."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False where the C library is not
    glibc (musl, macOS: nothing to do, their allocators do not adjust it this way)."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", threshold, done)
    return done


def keep_frame_buffers() -> bool:
    """The camera's setting (module docstring): blocks up to a 4K frame come from the heap and
    freed ones stay there for the next frame. False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(M_MMAP_THRESHOLD, FRAME_MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, FRAME_TRIM_THRESHOLD_BYTES)
    )
    log.debug("glibc keeps frame-sized blocks in the heap: %s", done)
    return done


def trim_periodically(stop: StopFlag, interval_s: float = 10.0) -> bool:
    """Every ``interval_s`` give the pages glibc holds free back to the system
    (``malloc_trim``), in a daemon thread until ``stop`` is set.

    Blocks under the threshold still come from the heaps of the threads that allocate them
    (ZeroMQ's I/O threads hold each message a camera sends or a viewer is sent), and after a
    burst they stay resident wherever one live block sits above them: after a store restart
    the cameras resend everything unacknowledged at once, and the relay queues up to 100
    frames per viewer. False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False

    def run() -> None:
        while not stop.wait(interval_s):
            libc.malloc_trim(0)

    threading.Thread(target=run, name="veilcam-malloc-trim", daemon=True).start()
    return True

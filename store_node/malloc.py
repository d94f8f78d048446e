"""Keep the store's memory flat after logins and bursts (glibc only).

glibc serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start) with their own
``mmap`` and gives them back on ``free``, but it raises the threshold to the size of every such
block it frees, up to 32 MiB. The store's first login frees scrypt's 16 MiB work area (n=2**14,
r=8, store_node/accounts.py), so from then on scrypt's buffer and every frame of 128 KiB-16 MiB
(a 720p JPEG frame is ~120-200 KiB) come from the heap, where a burst leaves them resident:
measured with ``python bench/load.py --seconds 80 --faults``, a restarted store's anonymous
memory went 77 -> 100 MB in the two seconds of one viewer's login and stayed there, and the
120 s fault run ended at 1.98x the memory of its first quarter. Setting the threshold
explicitly turns the adjustment off: large blocks are mapped and unmapped again.

Only the store does this: it allocates a few hundred KiB per frame at 10s of frames a second,
where a ``mmap`` per block costs nothing measurable; the camera's multi-megabyte numpy frames
would pay page faults on every frame instead.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

from veilcam.common.lifecycle import StopFlag

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


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

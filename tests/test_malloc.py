"""The store gives scrypt's work area back to the system after a login (common/malloc.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# One login's scrypt (16 MiB work area), then frames allocated meanwhile: how much anonymous
# memory the process holds afterwards, in KiB.
PROBE = """
import os, sys
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from veilcam.common.malloc import pin_mmap_threshold
def anon():
    return int([l.split()[1] for l in open('/proc/self/status') if l.startswith('RssAnon')][0])
if sys.argv[1] == 'pinned':
    assert pin_mmap_threshold()
before, frames = anon(), []
for _ in range(4):
    Scrypt(salt=b's' * 16, length=32, n=2**14, r=8, p=1).derive(b'password')
    frames.append(bytearray(os.urandom(150_000)))
print(anon() - before)
"""


def _growth_kib(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.e2e
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_logins_leave_no_scrypt_buffer_resident_in_the_store() -> None:
    default, pinned = _growth_kib("default"), _growth_kib("pinned")
    assert default > 12_000  # the behaviour it guards against: 16 MiB kept after a login
    assert pinned < 4_000, pinned  # four logins and 600 kB of frames later

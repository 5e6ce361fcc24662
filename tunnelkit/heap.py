"""
Tune the C heap of a tunnelkit process for its large socket reads.

Each read of a socket asks for up to L{LINK_BUFFER_SIZE} bytes, so CPython
allocates a buffer that large and then shrinks it to what arrived. glibc
serves an allocation that large with C{mmap} and, as the buffer shrinks and
is freed, C{mremap} and C{munmap}: three system calls, and fresh zeroed pages,
for every read, which is most of what a small request costs the kernel on
its way through the edge and the agent. Raising glibc's thresholds keeps
those buffers on the heap, reused from one read to the next.

Only glibc is tuned: on other C libraries, and where the C{MALLOC_*}
environment variables already choose, nothing changes.
"""

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

from twisted.logger import Logger

from tunnelkit.tlstransport import LINK_BUFFER_SIZE

_log = Logger()

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
"""glibc's C{mallopt} parameter numbers, from C{malloc.h}."""

MMAP_THRESHOLD = 4 * LINK_BUFFER_SIZE
"""Allocations at least this large still get their own mapping."""

TRIM_THRESHOLD = 4 * MMAP_THRESHOLD
"""Free bytes at the top of the heap kept for reuse rather than given back."""

_OVERRIDES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_read_buffers_on_heap(environ: Mapping[str, str] | None = None) -> bool:
    """
    Raise glibc's mapping and trimming thresholds above the largest socket
    read, once per process, before serving.

    @param environ: the environment to look for the user's own C{MALLOC_*}
        settings in; the process's by default.
    @return: whether the thresholds were changed.
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in _OVERRIDES):
        return False
    libc = _glibc()
    if libc is None:
        return False
    changed = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not changed:
        _log.debug("glibc refused the heap thresholds; reads map their buffers")
    return changed


def _glibc() -> ctypes.CDLL | None:
    """
    @return: the process's C library when it is glibc, else C{None}.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc

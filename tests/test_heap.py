"""
Tests for L{tunnelkit.heap}.
"""

import os
import subprocess
import sys
import textwrap

import tunnelkit

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit import heap
from tunnelkit.tlstransport import LINK_BUFFER_SIZE

_MAPPED_READ_BUFFERS = textwrap.dedent("""
    import ctypes, ctypes.util, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]

    if sys.argv[1] == "tuned":
        from tunnelkit.heap import keep_read_buffers_on_heap
        assert keep_read_buffers_on_heap({})
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    before = libc.mallinfo2().hblks
    buffers = [libc.malloc(%d) for _ in range(4)]
    print(libc.mallinfo2().hblks - before)
    for buffer in buffers:
        libc.free(buffer)
    """ % LINK_BUFFER_SIZE)


def _mapped_blocks(mode: str) -> int:
    """
    @return: how many blocks glibc maps of their own for four buffers of a
        link read, in a new interpreter, tuned or not, beside those the
        interpreter mapped as it started.
    """
    output = subprocess.run(
        [sys.executable, "-c", _MAPPED_READ_BUFFERS, mode],
        capture_output=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(tunnelkit.__file__)),
        text=True,
        timeout=60,
    )
    return int(output.stdout)


def _is_glibc() -> bool:
    return heap._glibc() is not None


class KeepReadBuffersOnHeapTests(SynchronousTestCase):
    """
    Tests for L{heap.keep_read_buffers_on_heap}.
    """

    def test_readBuffersOnHeap(self) -> None:
        """
        Once tuned, buffers the size of a link read come from the heap; by
        default glibc maps each of them apart.
        """
        if not _is_glibc():
            raise self.skipTest("the C library is not glibc")

        untuned = _mapped_blocks("default")
        tuned = _mapped_blocks("tuned")

        self.assertEqual((untuned, tuned), (4, 0))

    def test_userSettingsWin(self) -> None:
        """
        When the environment sets glibc's thresholds, they are left alone.
        """
        for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
            self.assertFalse(heap.keep_read_buffers_on_heap({name: "131072"}))

    def test_otherCLibrary(self) -> None:
        """
        Without glibc, nothing is tuned.
        """
        self.patch(heap, "_glibc", lambda: None)

        self.assertFalse(heap.keep_read_buffers_on_heap({}))

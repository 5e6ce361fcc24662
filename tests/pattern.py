"""
Deterministic bulk data for the end-to-end tests: a byte stream of any
length, made of 1 MiB blocks that each start with their own number, cheap
to produce and to hash, so that gigabytes can cross a tunnel and be checked
at the far end without being stored anywhere.

Run as C{python -m tests.pattern SIZE}, it writes the first SIZE bytes of
the stream to standard output, then their SHA-256 in hex to standard error.
"""

import hashlib
import random
import sys
from typing import Iterator

BLOCK_SIZE = 1024 * 1024

_FILLER = random.Random(BLOCK_SIZE).randbytes(BLOCK_SIZE - 8)


def pattern_blocks(total: int) -> Iterator[bytes]:
    """
    @param total: how many bytes of the stream to give.
    @return: the first C{total} bytes of the stream, a block at a time (the
        last one shorter when C{total} is not a multiple of L{BLOCK_SIZE}).
    """
    index = 0
    left = total
    while left > 0:
        block = index.to_bytes(8, "big") + _FILLER
        yield block[:left]
        left -= len(block)
        index += 1


def pattern_sha256(total: int) -> str:
    """
    @return: the SHA-256 in hex of the first C{total} bytes of the stream.
    """
    digest = hashlib.sha256()
    for block in pattern_blocks(total):
        digest.update(block)
    return digest.hexdigest()


def main(arguments: list[str]) -> int:
    """
    Write C{SIZE} bytes of the stream to standard output and their SHA-256
    to standard error.
    """
    [size] = arguments
    digest = hashlib.sha256()
    output = sys.stdout.buffer
    for block in pattern_blocks(int(size)):
        digest.update(block)
        output.write(block)
    output.flush()
    sys.stderr.write(digest.hexdigest() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

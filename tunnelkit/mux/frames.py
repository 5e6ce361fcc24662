"""
The yamux frame header: its layout, its constants and its encoding.

Every yamux frame starts with a 12-byte header in network byte order::

    version (8 bits) | type (8) | flags (16) | stream id (32) | length (32)

For Data frames the length counts the payload bytes that follow the header;
for Window Update it is the window delta, for Ping the opaque value and for
Go Away the error code, and no payload follows.
"""

import struct
from enum import IntEnum, IntFlag

PROTOCOL_VERSION = 0
HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size
INITIAL_STREAM_WINDOW = 256 * 1024
MAX_UINT32 = 0xFFFFFFFF
SESSION_STREAM_ID = 0


class FrameType(IntEnum):
    """
    The four frame types of the spec.
    """

    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(IntFlag):
    """
    Header flags; SYN, ACK, FIN and RST may ride on Data or Window Update
    frames, SYN and ACK on Ping frames.
    """

    NONE = 0
    SYN = 0x1
    ACK = 0x2
    FIN = 0x4
    RST = 0x8


class GoAwayCode(IntEnum):
    """
    The reason carried in the length field of a Go Away frame.
    """

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


def encode_header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    """
    Encode one frame header.

    @param frame_type: a L{FrameType} value.
    @param flags: a combination of L{Flag} values.
    @param stream_id: the stream the frame is about, or 0 for the session.
    @param length: payload length, window delta, ping value or error code.
    @return: the 12 header bytes.
    """
    return HEADER.pack(PROTOCOL_VERSION, frame_type, flags, stream_id, length)

"""
Stream multiplexing between agent and edge: HashiCorp's yamux, as a sans-IO
core (L{MuxSession}) and a Twisted protocol around it (L{MuxProtocol}).
"""

from tunnelkit.mux.frames import INITIAL_STREAM_WINDOW, Flag, FrameType, GoAwayCode
from tunnelkit.mux.protocol import (
    MuxProtocol,
    StreamAddress,
    StreamRefused,
    StreamTransport,
)
from tunnelkit.mux.session import MuxConfig, MuxSession

__all__ = [
    "Flag",
    "FrameType",
    "GoAwayCode",
    "INITIAL_STREAM_WINDOW",
    "MuxConfig",
    "MuxProtocol",
    "MuxSession",
    "StreamAddress",
    "StreamRefused",
    "StreamTransport",
]

"""
Control between agent and edge: typed messages and RPC over single streams.

L{tunnelkit.control.messages} holds the message classes and their framing
without any I/O; L{tunnelkit.control.rpc} runs one request and one reply
over any Twisted transport, and hands proxy streams to their protocol.
"""

"""
How addresses are written for people: C{host:port}, with brackets around
IPv6 hosts.
"""

from typing import Any


def format_address(address: Any) -> str:
    """
    @return: C{host:port} for an IPv4 or IPv6 address, C{host:port
        stream N} for a multiplexed stream's address, C{str()} otherwise.
    """
    connection = getattr(address, "connection", None)
    stream_id = getattr(address, "stream_id", None)
    if connection is not None and stream_id is not None:
        return f"{format_address(connection)} stream {stream_id}"
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"

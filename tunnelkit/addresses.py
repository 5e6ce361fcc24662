"""
How addresses are written for people: C{host:port}, with brackets around
IPv6 hosts.
"""

from typing import Any


def format_address(address: Any) -> str:
    """
    @return: C{host:port} for an IPv4 or IPv6 address, C{str()} otherwise.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"

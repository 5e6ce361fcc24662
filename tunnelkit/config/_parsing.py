"""
Parsing the text forms of values that several places accept: network
addresses (L{HostPort}), Go-style durations and file paths.

These functions raise C{ValueError} with a sentence that can be shown to a
person; the configuration loaders turn it into a located L{ConfigError}, and
the command line can use the same functions for its flags.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class HostPort:
    """
    A network address: a host name or IP address and a port.

    @ivar host: the host name or IP address (IPv6 without brackets).
    @ivar port: the port number.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_port(text: str, allow_zero: bool = False) -> int:
    """
    Parse a port number.

    @param text: decimal digits.
    @param allow_zero: whether C{0} (any free port) is acceptable.
    @return: the port.
    @raise ValueError: when C{text} is not a port in range.
    """
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a port number")
    port = int(text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is outside {low}-65535")
    return port


def parse_host_port(
    text: str, default_port: int | None = None, allow_port_zero: bool = False
) -> HostPort:
    """
    Parse C{host:port}, C{[v6]:port}, or a bare host when a default is given.

    @param text: the address as written.
    @param default_port: the port used when C{text} names only a host, or
        C{None} when a port is required.
    @param allow_port_zero: whether port C{0} is acceptable.
    @return: the address.
    @raise ValueError: when C{text} is not such an address.
    """
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not a valid [IPv6]:port address")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    if not host or any(c.isspace() or c in "/@?#" for c in host):
        raise ValueError(f"{text!r} does not start with a valid host")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} has no port; write it as host:port")
        return HostPort(host, default_port)
    return HostPort(host, parse_port(port_text, allow_port_zero))


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """
    Parse a Go-style duration such as C{10s}, C{500ms} or C{1m30s}.

    A sequence of decimal numbers each followed by a unit (C{ns}, C{us},
    C{ms}, C{s}, C{m}, C{h}), with an optional sign; C{0} alone needs no
    unit.

    @param text: the duration as written.
    @return: the duration in seconds.
    @raise ValueError: when C{text} is not a duration.
    """
    rest = text.strip()
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"{text!r} is not a duration")
    total = 0.0
    position = 0
    while position < len(rest):
        match = _DURATION_PART.match(rest, position)
        if match is None:
            raise ValueError(
                f"{text!r} is not a duration; write a number with a unit, "
                "such as 10s, 500ms or 1m30s"
            )
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * total


def resolve_path(text: str, config_path: str) -> str:
    """
    Expand C{~} and make a path absolute, relative to the file that named it.

    @param text: the path as written in a configuration file.
    @param config_path: the configuration file it was written in.
    @return: an absolute, normalised path.
    """
    expanded = os.path.expanduser(text)
    if not os.path.isabs(expanded):
        base = os.path.dirname(os.path.abspath(config_path))
        expanded = os.path.join(base, expanded)
    return os.path.normpath(expanded)

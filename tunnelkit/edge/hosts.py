"""
Host names at the edge: which HTTP binding serves each public host, which
names an authtoken may take, and the random names tunnels get when they ask
for none.

L{HostTable} maps exact names and wildcards (C{*.example.com}, matching
any name below C{example.com}) to bindings; a lookup costs one dictionary
probe per label of the host, never a scan over tunnels. The table holds
bookkeeping only: the ingress protocol in L{tunnelkit.edge.http} asks it
where a request goes.
"""

import functools
import hashlib
import hmac
import ipaddress
from typing import Generic, Iterable, TypeVar
from tunnelkit.hostnames import is_name_or_wildcard

_B = TypeVar("_B")


RANDOM_NAME_LENGTH = 12
"""Hex digits in a random tunnel name, such as C{3f9a0c1d5e7b}."""


REMEMBERED_HOST_VALUES = 1024
"""How many distinct C{Host} header values L{normalise_host_header} keeps
the answer for, the most recently used."""

_REMEMBERED_LENGTH = 270
"""The longest C{Host} value remembered: a DNS name, a port and brackets.
Longer ones are not valid names anyway, and are worked out each time, so
that what is remembered stays under 1 MB however hostile the clients."""


def normalise_host_header(value: bytes) -> str | None:
    """
    L{normalise_host} for a request's C{Host} header, remembering the
    answer for the values seen lately: the clients of a busy edge send the
    same few values over and over.
    """
    if len(value) > _REMEMBERED_LENGTH:
        return normalise_host(value)
    return _normalise_remembered(value)


def normalise_host(value: bytes | str) -> str | None:
    """
    Turn a C{Host} header or an SNI name into the name routes are kept
    under: lower case, without a port, a trailing dot or IPv6 brackets.

    @return: the name, or C{None} if it is not a valid host name.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    host = value.strip().lower()
    if host.startswith("["):
        literal, closing, port = host[1:].partition("]")
        if not closing or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        try:
            return str(ipaddress.IPv6Address(literal))
        except ValueError:
            return None
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    name = name.rstrip(".")
    if name.startswith("*") or not is_name_or_wildcard(name):
        return None
    return name


@functools.lru_cache(maxsize=REMEMBERED_HOST_VALUES)
def _normalise_remembered(value: bytes) -> str | None:
    """
    L{normalise_host}, its answers for the most recent values kept.
    """
    return normalise_host(value)


def is_valid_pattern(pattern: str) -> bool:
    """
    @return: whether C{pattern} is a host name, or C{*.} followed by one.
    """
    return is_name_or_wildcard(pattern)


def pattern_covers(pattern: str, name: str) -> bool:
    """
    Whether a hostname pattern from C{edge.yml} allows a name.

    @param pattern: C{app.example.com} or C{*.example.com}.
    @param name: a host name, or a wildcard such as C{*.dev.example.com}.
    @return: C{True} when C{name} equals C{pattern}, or C{pattern} is a
        wildcard and C{name} lies below its suffix (a wildcard name
        included: C{*.example.com} covers C{*.dev.example.com}).
    """
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]
    bare = name[2:] if name.startswith("*.") else name
    return bare.endswith(suffix) or (name.startswith("*.") and bare == suffix[1:])


def random_name(secret: bytes, scope: str, binding_id: str, attempt: int = 0) -> str:
    """
    The random-looking name of a tunnel that asked for none: derived from
    the edge's secret, the authtoken and session (C{scope}) and the
    binding, so that the same agent session gets the same name back after
    a reconnect or an edge restart, and nobody can guess another's.

    @param attempt: 0, or a later attempt after a collision.
    @return: C{RANDOM_NAME_LENGTH} hex digits.
    """
    message = f"name\0{scope}\0{binding_id}\0{attempt}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).hexdigest()
    return digest[:RANDOM_NAME_LENGTH]


class HostTable(Generic[_B]):
    """
    Bindings by exact host name and by wildcard.
    """

    def __init__(self) -> None:
        self._exact: dict[str, _B] = {}
        self._wildcard: dict[str, _B] = {}

    def _slot(self, name: str) -> tuple[dict[str, _B], str]:
        if name.startswith("*."):
            return self._wildcard, name[2:]
        return self._exact, name

    def get(self, name: str) -> _B | None:
        """
        @param name: an exact name or a wildcard as bound.
        @return: the binding registered under exactly that name.
        """
        table, key = self._slot(name)
        return table.get(key)

    def add(self, name: str, binding: _B) -> None:
        """
        Register C{binding} under C{name}, replacing any other.
        """
        table, key = self._slot(name)
        table[key] = binding

    def remove(self, name: str, binding: _B) -> None:
        """
        Unregister C{binding} from C{name}, if it is still the one there.
        """
        table, key = self._slot(name)
        if table.get(key) is binding:
            del table[key]

    def lookup(self, host: str) -> _B | None:
        """
        Find the binding serving a request's host: the exact name first,
        then the most specific wildcard above it.

        @param host: a name from L{normalise_host}.
        """
        found = self._exact.get(host)
        if found is not None:
            return found
        dot = host.find(".")
        while dot >= 0:
            suffix = host[dot + 1 :]
            found = self._wildcard.get(suffix)
            if found is not None:
                return found
            dot = host.find(".", dot + 1)
        return None

    def values(self) -> Iterable[_B]:
        """
        @return: every binding registered.
        """
        return [*self._exact.values(), *self._wildcard.values()]

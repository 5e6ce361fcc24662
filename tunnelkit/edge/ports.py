"""
Which public TCP ports the edge hands out, to whom, and for how long they
stay reserved after a session drops.

L{PortBook} is pure bookkeeping, without sockets: it picks candidate ports,
records which session holds each, and keeps a dropped session's ports for a
grace period so that the same agent reconnecting gets them back. Listening
is left to L{tunnelkit.edge.tcp}, which asks the book for a port and tells it
whether the port could be bound.

L{AffinityTokens} lets that promise outlive the edge process: each binding's
reply carries a token, an HMAC over the session, binding and port, that the
agent sends back when it binds again; a valid token asks for the same port
after an edge restart, when nothing else holds it.
"""

import hashlib
import hmac
import random
from dataclasses import dataclass, field
from typing import Iterator

from tunnelkit.config import PortRange


@dataclass
class PortHold:
    """
    One port held for one binding of one session.

    @ivar expires: when a dropped session's hold ends (clock seconds), or
        C{None} while the session is connected.
    """

    port: int
    session_id: str
    binding_id: str
    expires: float | None = None


@dataclass
class PortBook:
    """
    The TCP ports of the edge's range and the reserved addresses, and who
    holds them.

    @ivar reserved: ports reserved for particular authtokens; never offered
        as random ports, even inside the range.
    """

    port_range: PortRange
    rng: random.Random = field(default_factory=random.SystemRandom)
    reserved: frozenset[int] = frozenset()
    _holds: dict[int, PortHold] = field(default_factory=dict)

    def holder(self, port: int) -> PortHold | None:
        """
        @return: the hold on C{port}, if any.
        """
        return self._holds.get(port)

    def held_for(self, session_id: str, binding_id: str) -> int | None:
        """
        @return: the port a session held for a binding id, connected or in
            its grace period, if any.
        """
        for hold in self._holds.values():
            if hold.session_id == session_id and hold.binding_id == binding_id:
                return hold.port
        return None

    def is_free(self, port: int) -> bool:
        """
        @return: whether C{port} may be offered at random: nobody holds it
            and no authtoken has it reserved.
        """
        return port not in self._holds and port not in self.reserved

    def candidates(self, limit: int = 64) -> Iterator[int]:
        """
        Free ports of the range in random order, at most C{limit} of them;
        a crowded range is scanned from a random start instead.
        """
        low, high = self.port_range.low, self.port_range.high
        size = high - low + 1
        offered = 0
        tried: set[int] = set()
        while offered < limit and len(tried) < min(size, limit * 4):
            port = self.rng.randint(low, high)
            if port in tried:
                continue
            tried.add(port)
            if self.is_free(port):
                offered += 1
                yield port
        if offered:
            return
        start = self.rng.randint(0, size - 1)
        for step in range(size):
            port = low + (start + step) % size
            if self.is_free(port):
                yield port
                offered += 1
                if offered >= limit:
                    return

    def hold(self, port: int, session_id: str, binding_id: str) -> None:
        """
        Record that a connected session holds C{port} for a binding.
        """
        self._holds[port] = PortHold(port, session_id, binding_id)

    def release(self, port: int) -> None:
        """
        Free C{port} at once.
        """
        self._holds.pop(port, None)

    def session_dropped(self, session_id: str, now: float, grace: float) -> list[int]:
        """
        Keep a dropped session's ports for C{grace} seconds.

        @return: the ports now in their grace period.
        """
        ports = []
        for hold in self._holds.values():
            if hold.session_id == session_id:
                hold.expires = now + grace
                ports.append(hold.port)
        return ports

    def has_holds(self, session_id: str) -> bool:
        """
        @return: whether C{session_id} holds any port, connected or not.
        """
        return any(hold.session_id == session_id for hold in self._holds.values())

    def next_expiry(self) -> float | None:
        """
        @return: when the next grace period ends, or C{None} if none runs.
        """
        expiries = [h.expires for h in self._holds.values() if h.expires is not None]
        return min(expiries, default=None)

    def expire(self, now: float) -> list[int]:
        """
        Free every port whose grace period has ended.

        @return: the ports freed.
        """
        expired = [
            port
            for port, hold in self._holds.items()
            if hold.expires is not None and hold.expires <= now
        ]
        for port in expired:
            del self._holds[port]
        return expired


class AffinityTokens:
    """
    Tokens that let an agent ask for the port it had before an edge restart.

    @ivar secret: the key of the HMAC, kept in the edge's state directory.
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, session_id: str, binding_id: str, port: int) -> str:
        message = f"{session_id}\0{binding_id}\0{port}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:32]

    def issue(self, session_id: str, binding_id: str, port: int) -> str:
        """
        @return: a token naming C{port} for this session and binding.
        """
        return f"{port}.{self._mac(session_id, binding_id, port)}"

    def port_of(self, token: str, session_id: str, binding_id: str) -> int | None:
        """
        @return: the port a valid token names, or C{None} for a token that
            is malformed or was issued for another session or binding.
        """
        port_text, _, mac = token.partition(".")
        if not (port_text.isascii() and port_text.isdigit()) or not mac:
            return None
        if len(port_text) > 5:
            return None
        port = int(port_text)
        expected = self._mac(session_id, binding_id, port)
        if not hmac.compare_digest(expected, mac):
            return None
        return port

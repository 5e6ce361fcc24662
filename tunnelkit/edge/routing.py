"""
What backends decide with and what they decide: the request a backend is
asked about, the decisions it may return, the labeled tunnels online in
groups by their exact label sets, and the balancing of a group.

This module does no I/O: the edge's listeners build a L{BackendRequest},
ask a backend (L{tunnelkit.interfaces.IBackend}), and carry out the
decision. A labeled tunnel joins the group of its label set when its agent
binds it and leaves it the moment its session ends, so a group holds only
tunnels that are online. Finding a group costs one dictionary probe on the
label set, O(labels); balancing looks only at that group's tunnels.

Known limit: a tunnel matches a group only when its labels are exactly the
group's, not a superset of them.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from tunnelkit.edge.session import EdgeSession

FAILURE_HOLD = 5.0
"""Seconds a tunnel that failed to take a connection is skipped for."""

LabelSet = frozenset[tuple[str, str]]
"""A set of labels, as C{(name, value)} pairs."""

BALANCES = ("round_robin", "least_connections")
"""How a tunnel group spreads connections over its tunnels."""


def label_set(labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> LabelSet:
    """
    @param labels: a mapping of names to values, or C{(name, value)} pairs.
    @return: the labels as a L{LabelSet}.
    """
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    return frozenset((str(name), str(value)) for name, value in pairs)


def format_labels(labels: LabelSet) -> str:
    """
    @return: the labels as people write them, C{app=web,env=prod}, sorted.
    """
    return ",".join(f"{name}={value}" for name, value in sorted(labels))


@dataclass(frozen=True)
class BackendRequest:
    """
    One public connection or HTTP request, as a backend sees it.

    @ivar protocol: C{https}, C{tls} or C{tcp}: the edge's type.
    @ivar host: the host asked for (the C{Host} of an HTTP request, the SNI
        name of a TLS connection, the edge's host for TCP).
    @ivar path: the request's path without its query; C{""} for TCP and
        TLS.
    @ivar client: the public client's address, C{ip:port}.
    @ivar edge: the id of the edge the request came to.
    @ivar labels: the edge's own labels, C{{"edge": EDGE_ID}}.
    @ivar time: the edge's clock, in seconds.
    @ivar headers: the request's header fields, names in lower case, in
        order; empty for TCP and TLS.
    """

    protocol: str
    host: str
    path: str
    client: str
    edge: str
    labels: Mapping[str, str]
    time: float
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """
        @param name: a header name, in any case.
        @return: the value of the first field of that name, if any.
        """
        lowered = name.lower()
        for key, value in self.headers:
            if key == lowered:
                return value
        return None


@dataclass(eq=False)
class LabeledBinding:
    """
    One labeled tunnel of an agent session, a target of the tunnel groups
    that ask for its labels.

    @ivar binding_id: the id the agent gave the binding.
    @ivar name: the tunnel's name in the agent's configuration.
    @ivar labels: its labels.
    @ivar forwards_to: the agent's local address, for display.
    @ivar session_id: the id of the agent session that holds it.
    @ivar owner: the name of the authtoken that bound it.
    @ivar session: the session serving it, or C{None} once gone.
    @ivar host_header: the C{Host} sent upstream, always C{b""} (the public
        one is passed through).
    @ivar open_connections: public connections open now.
    @ivar total_connections: public connections since it was bound.
    @ivar failed_at: when a connection to it last failed to open, or
        C{None}.
    """

    binding_id: str
    name: str
    labels: LabelSet
    forwards_to: str
    session_id: str
    owner: str
    session: "EdgeSession | None" = None
    host_header: bytes = b""
    open_connections: int = 0
    total_connections: int = 0
    failed_at: float | None = None

    def healthy(self, now: float) -> bool:
        """
        @return: whether it is online and has not failed in the last
            L{FAILURE_HOLD} seconds.
        """
        if self.session is None:
            return False
        return self.failed_at is None or now - self.failed_at >= FAILURE_HOLD


class TunnelGroups:
    """
    The labeled tunnels online, grouped by their exact label sets.
    """

    def __init__(self) -> None:
        self._groups: dict[LabelSet, list[LabeledBinding]] = {}

    def add(self, binding: LabeledBinding) -> None:
        """
        Put a tunnel in the group of its labels, last.
        """
        self._groups.setdefault(binding.labels, []).append(binding)

    def remove(self, binding: LabeledBinding) -> None:
        """
        Take a tunnel out of its group, if it is there.
        """
        members = self._groups.get(binding.labels)
        if members is None or binding not in members:
            return
        members.remove(binding)
        if not members:
            del self._groups[binding.labels]

    def members(self, labels: LabelSet) -> list[LabeledBinding]:
        """
        @return: the tunnels bound with exactly C{labels}, in the order they
            joined; the list is the group's own and must not be changed.
        """
        return self._groups.get(labels, _EMPTY)

    def __len__(self) -> int:
        return sum(len(members) for members in self._groups.values())


_EMPTY: list[LabeledBinding] = []


@dataclass
class Balancer:
    """
    Picks one tunnel of a group for each connection, skipping tunnels that
    are offline or just failed.

    @ivar balance: C{round_robin} (each healthy tunnel in turn) or
        C{least_connections} (the healthy tunnel with the fewest open
        connections, ties taken in round-robin order).
    @ivar cursor: where the next round starts in the group.
    """

    balance: str = "round_robin"
    cursor: int = field(default=0)

    def pick(self, members: list[LabeledBinding], now: float) -> LabeledBinding | None:
        """
        @param members: the group's tunnels.
        @param now: the edge's clock.
        @return: the tunnel chosen, or C{None} when none is healthy.
        """
        count = len(members)
        if not count:
            return None
        start = self.cursor % count
        chosen: LabeledBinding | None = None
        chosen_at = 0
        for step in range(count):
            index = (start + step) % count
            member = members[index]
            if not member.healthy(now):
                continue
            if self.balance == "round_robin":
                chosen, chosen_at = member, index
                break
            if chosen is None or member.open_connections < chosen.open_connections:
                chosen, chosen_at = member, index
        if chosen is not None:
            self.cursor = chosen_at + 1
        return chosen


# Decisions


@dataclass(frozen=True)
class TunnelTarget:
    """
    Send the connection to a labeled tunnel.

    @ivar binding: the tunnel.
    """

    binding: LabeledBinding


@dataclass(frozen=True)
class FixedResponse:
    """
    Answer an HTTP request with a fixed response and close the connection;
    a TCP or TLS connection is closed at once.

    @ivar status: the HTTP status code.
    @ivar headers: header fields to send, as C{(name, value)}.
    @ivar body: the body.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class StaticAddress:
    """
    Send the connection to a fixed address the edge connects to itself.

    @ivar host: the host to connect to.
    @ivar port: the port.
    @ivar tls: whether to speak TLS to it (without verifying its
        certificate).
    """

    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True)
class Unavailable:
    """
    No target is available now: an HTTP client is answered C{503} with the
    code C{TK_BACKEND_UNAVAILABLE} and this sentence; a TCP or TLS
    connection is closed.

    @ivar sentence: what is missing and what to do, for the error page.
    """

    sentence: str


Decision = TunnelTarget | FixedResponse | StaticAddress | Unavailable
"""What a backend may decide."""

"""
The backends of edge routes: the built-in kinds (tunnel group, weighted,
failover, HTTP response, static address), the Twisted plugins that add
others, and building a backend from its mapping in C{edge.yml}.

Every kind, built in or not, is an L{IBackendFactory} named by its type.
L{backend_factories} finds the plugins with
C{twisted.plugin.getPlugins}, in every C{twisted/plugins/} directory on
the Python path. L{build_backend} reads one backend mapping, hands its
options to the factory of its type and turns a C{ValueError} from the
factory into a L{ConfigError} that names the file, line, edge and route.
"""

import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from tunnelkit.config._errors import INVALID_VALUE, MISSING_KEY, ConfigError
from tunnelkit.config._parsing import parse_host_port
from tunnelkit.config._yaml import YamlMapping, YamlNode, YamlScalar, YamlSequence
from tunnelkit.config._yaml import describe
from tunnelkit.edge.routing import (
    BALANCES,
    Balancer,
    BackendRequest,
    Decision,
    FixedResponse,
    LabelSet,
    StaticAddress,
    TunnelGroups,
    TunnelTarget,
    Unavailable,
    format_labels,
    label_set,
)
from tunnelkit.interfaces import IBackend, IBackendBuilder, IBackendFactory

_log = Logger()

MAX_WEIGHT = 10000
"""The largest weight of a weighted backend's child."""

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.\-/:*]{0,253}$")


# The built-in backends


@implementer(IBackend)
class TunnelGroupBackend:
    """
    Spreads connections over every online tunnel bound with exactly its
    labels.
    """

    def __init__(
        self, groups: TunnelGroups, labels: LabelSet, balance: str = "round_robin"
    ) -> None:
        self.groups = groups
        self.labels = labels
        self.balancer = Balancer(balance)

    def choose(self, request: BackendRequest) -> Decision:
        members = self.groups.members(self.labels)
        chosen = self.balancer.pick(members, request.time)
        if chosen is not None:
            return TunnelTarget(chosen)
        labels = format_labels(self.labels)
        flags = " ".join(f"--label {n}={v}" for n, v in sorted(self.labels))
        if members:
            return Unavailable(
                f"Every tunnel with the labels {labels} failed to take a"
                " connection in the last few seconds. Check their agents."
            )
        return Unavailable(
            f"No tunnel with the labels {labels} is online. Start one with"
            f" `tunnelkit tunnel {flags} ADDR`."
        )


@implementer(IBackend)
class WeightedBackend:
    """
    Sends each connection to one child, chosen at random in proportion to
    the children's weights; a child with no target is passed over for
    another.
    """

    def __init__(
        self,
        children: Sequence[tuple[IBackend, int]],
        rng: random.Random | None = None,
    ) -> None:
        self.children = [(child, weight) for child, weight in children if weight > 0]
        self.rng = rng or random.Random()

    def choose(self, request: BackendRequest) -> Decision:
        remaining = list(self.children)
        unavailable = Unavailable("Every backend of this route has weight 0.")
        while remaining:
            point = self.rng.randrange(sum(weight for _, weight in remaining))
            for index, (child, weight) in enumerate(remaining):
                if point < weight:
                    break
                point -= weight
            decision = child.choose(request)
            if not isinstance(decision, Unavailable):
                return decision
            unavailable = decision
            del remaining[index]
        return unavailable


@implementer(IBackend)
class FailoverBackend:
    """
    Asks its children in order and takes the first that has a target.
    """

    def __init__(self, children: Sequence[IBackend]) -> None:
        self.children = list(children)

    def choose(self, request: BackendRequest) -> Decision:
        decision: Decision = Unavailable("This route has no backends.")
        for child in self.children:
            decision = child.choose(request)
            if not isinstance(decision, Unavailable):
                return decision
        return decision


@implementer(IBackend)
class HttpResponseBackend:
    """
    Answers every HTTP request with the same response.
    """

    def __init__(self, response: FixedResponse) -> None:
        self.response = response

    def choose(self, request: BackendRequest) -> Decision:
        return self.response


@implementer(IBackend)
class StaticAddressBackend:
    """
    Sends every connection to one address the edge connects to itself.
    """

    def __init__(self, address: StaticAddress) -> None:
        self.address = address

    def choose(self, request: BackendRequest) -> Decision:
        return self.address


# Their factories


def _check_keys(options: Mapping[str, Any], allowed: Sequence[str], kind: str) -> None:
    for key in options:
        if key not in allowed:
            raise ValueError(
                f"unknown option {key!r}; the options of a {kind} backend are"
                f" {', '.join(allowed)}"
            )


def read_labels(value: object) -> LabelSet:
    """
    Read the labels of a tunnel group: a mapping of names to values, or a
    list of C{name=value} strings.

    @raise ValueError: for anything else, or a bad name or value.
    """
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        pairs = [(str(name), _scalar_text(text)) for name, text in value.items()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        for item in value:
            name, equals, text = item.partition("=")
            if not equals:
                raise ValueError(f"{item!r} is not a label; write name=value")
            pairs.append((name, text))
    else:
        raise ValueError(
            "labels must be a mapping of names to values, or a list of"
            " name=value strings"
        )
    if not pairs:
        raise ValueError("labels must name at least one label")
    names = [name for name, _ in pairs]
    for name, text in pairs:
        if not _LABEL_NAME.match(name) or not _LABEL_VALUE.match(text):
            raise ValueError(f"{name}={text} is not a valid label")
        if names.count(name) > 1:
            raise ValueError(f"the label {name!r} is given twice")
    return label_set(pairs)


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"a label's value must be a string, not {value!r}")


@implementer(IBackendFactory)
@dataclass(frozen=True)
class _TunnelGroupFactory:
    type: str = "tunnel_group"

    def build(self, options: Mapping[str, Any], builder: IBackendBuilder) -> IBackend:
        _check_keys(options, ("labels", "balance"), self.type)
        labels = options.get("labels")
        if labels is None:
            labels = builder.edge_labels
        return builder.tunnel_group(labels, options.get("balance") or "round_robin")


@implementer(IBackendFactory)
@dataclass(frozen=True)
class _WeightedFactory:
    type: str = "weighted"

    def build(self, options: Mapping[str, Any], builder: IBackendBuilder) -> IBackend:
        _check_keys(options, ("backends",), self.type)
        items = options.get("backends")
        if not isinstance(items, list) or not items:
            raise ValueError(
                "backends must list at least one {weight: N, backend: {...}}"
            )
        children = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"weight", "backend"}:
                raise ValueError(
                    f"backends[{index}] must be a mapping of exactly weight and"
                    " backend"
                )
            weight = item["weight"]
            if (
                not isinstance(weight, int)
                or isinstance(weight, bool)
                or not 0 <= weight <= MAX_WEIGHT
            ):
                raise ValueError(
                    f"backends[{index}].weight must be a whole number from 0 to"
                    f" {MAX_WEIGHT}, not {weight!r}"
                )
            children.append((builder.child("backends", index, "backend"), weight))
        return WeightedBackend(children)


@implementer(IBackendFactory)
@dataclass(frozen=True)
class _FailoverFactory:
    type: str = "failover"

    def build(self, options: Mapping[str, Any], builder: IBackendBuilder) -> IBackend:
        _check_keys(options, ("backends",), self.type)
        items = options.get("backends")
        if not isinstance(items, list) or not items:
            raise ValueError("backends must list at least one backend, in order")
        return FailoverBackend(
            [builder.child("backends", index) for index in range(len(items))]
        )


@implementer(IBackendFactory)
@dataclass(frozen=True)
class _HttpResponseFactory:
    type: str = "http_response"

    def build(self, options: Mapping[str, Any], builder: IBackendBuilder) -> IBackend:
        _check_keys(options, ("status", "headers", "body"), self.type)
        status = options.get("status", 200)
        if (
            not isinstance(status, int)
            or isinstance(status, bool)
            or not 200 <= status <= 599
        ):
            raise ValueError("status must be an HTTP status from 200 to 599")
        headers = options.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValueError("headers must be a mapping of names to values")
        fields = []
        for name, value in headers.items():
            text = _scalar_text(value)
            if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", str(name)) or any(
                not (" " <= c <= "~") for c in text
            ):
                raise ValueError(f"the header {name!r} is not a valid header field")
            if name.lower() in ("content-length", "transfer-encoding", "connection"):
                raise ValueError(f"the header {name!r} is set by the edge itself")
            fields.append((str(name), text))
        body = options.get("body", "")
        if not isinstance(body, str):
            raise ValueError("body must be a string")
        return HttpResponseBackend(
            FixedResponse(status, tuple(fields), body.encode("utf-8"))
        )


@implementer(IBackendFactory)
@dataclass(frozen=True)
class _StaticAddressFactory:
    type: str = "static_address"

    def build(self, options: Mapping[str, Any], builder: IBackendBuilder) -> IBackend:
        _check_keys(options, ("address", "tls"), self.type)
        address = options.get("address")
        if not isinstance(address, str):
            raise ValueError("address must be host:port")
        parsed = parse_host_port(address)
        tls = options.get("tls", False)
        if not isinstance(tls, bool):
            raise ValueError("tls must be true or false")
        return StaticAddressBackend(StaticAddress(parsed.host, parsed.port, tls))


BUILT_IN: Mapping[str, IBackendFactory] = {
    factory.type: factory
    for factory in (
        _TunnelGroupFactory(),
        _WeightedFactory(),
        _FailoverFactory(),
        _HttpResponseFactory(),
        _StaticAddressFactory(),
    )
}
"""The built-in kinds of backend, by type."""


def backend_factories() -> dict[str, IBackendFactory]:
    """
    Find every kind of backend: the built-in ones, and those of the Twisted
    plugins providing L{IBackendFactory}. A plugin whose type is not a valid
    name, is a built-in's, or is another plugin's already is left out, with
    a warning.

    @return: the factories by type.
    """
    from twisted.plugin import getPlugins

    factories = dict(BUILT_IN)
    for plugin in getPlugins(IBackendFactory):
        kind = getattr(plugin, "type", None)
        if not isinstance(kind, str) or not _TYPE_NAME.match(kind):
            _warn_once(plugin, kind, "its type {kind!r} is not a lower-case name")
            continue
        if kind in factories:
            _warn_once(plugin, kind, "the type {kind} is taken")
            continue
        factories[kind] = plugin
    return factories


_warned: set[tuple[str, str]] = set()
"""The plugins and types already warned about: the plugins are looked for
each time C{edge.yml} is loaded, and the warning is logged once."""


def _warn_once(plugin: object, kind: object, why: str) -> None:
    """
    Warn, once per plugin class and type, that a plugin is left out.

    @param why: the reason, a format string that may use C{{kind}}.
    """
    cls = type(plugin)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if (name, repr(kind)) in _warned:
        return
    _warned.add((name, repr(kind)))
    _log.warn("ignoring backend plugin {plugin}: " + why, plugin=name, kind=kind)


# Building a backend from edge.yml


@dataclass
class BuildContext:
    """
    What the backends of one edge are built with.

    @ivar groups: the tunnel groups their tunnel groups look in.
    @ivar edge: the edge's id.
    @ivar place: the edge and route, for error messages, such as
        C{edge 'web', route path_prefix /api}.
    @ivar factories: the kinds of backend, by type.
    """

    groups: TunnelGroups
    edge: str
    place: str
    factories: Mapping[str, IBackendFactory] = field(default_factory=lambda: BUILT_IN)


@implementer(IBackendBuilder)
class BackendBuilder:
    """
    What a factory builds the backend of one mapping of C{edge.yml} with.
    """

    def __init__(self, node: YamlMapping, where: str, context: BuildContext) -> None:
        self.node = node
        self.where = where
        self.context = context
        self.edge_labels = {"edge": context.edge}

    def child(self, *keys: object) -> IBackend:
        node: YamlNode = self.node
        where = self.where
        for key in keys:
            if isinstance(key, int) and isinstance(node, YamlSequence):
                if not 0 <= key < len(node.items):
                    raise ValueError(f"{where} has no item {key}")
                node, where = node.items[key], f"{where}[{key}]"
            elif isinstance(key, str) and isinstance(node, YamlMapping):
                entry = node.entries.get(key)
                if entry is None:
                    raise ValueError(f"the option {key!r} is missing")
                node, where = entry.value, f"{where}.{key}"
            else:
                raise ValueError(f"{where} has no {key!r}")
        return build_backend(node, where, self.context)

    def tunnel_group(self, labels: object, balance: str = "round_robin") -> IBackend:
        if balance not in BALANCES:
            raise ValueError(
                f"balance must be one of {', '.join(BALANCES)}, not {balance!r}"
            )
        return TunnelGroupBackend(self.context.groups, read_labels(labels), balance)


def plain(node: YamlNode) -> Any:
    """
    @return: a YAML value as plain Python values: C{dict}, C{list}, and the
        scalars as YAML's safe schema reads them.
    """
    if isinstance(node, YamlMapping):
        return {key: plain(entry.value) for key, entry in node.entries.items()}
    if isinstance(node, YamlSequence):
        return [plain(item) for item in node.items]
    return node.value


def build_backend(node: YamlNode, where: str, context: BuildContext) -> IBackend:
    """
    Build the backend a mapping of C{edge.yml} describes.

    @param node: the mapping, with its C{type} and options.
    @param where: its dotted key, such as C{edges.web.routes[0].backend}.
    @return: the backend.
    @raise ConfigError: naming the file, line, key, edge and route, for a
        missing or unknown type or a bad option.
    """
    if not isinstance(node, YamlMapping):
        raise ConfigError(
            INVALID_VALUE,
            f"{context.place}: expected a backend mapping with a type, got"
            f" {describe(node)}",
            path=node.path,
            line=node.line,
            key=where,
        )
    entry = node.entries.get("type")
    kind = entry.value if entry is not None else None
    if not isinstance(kind, YamlScalar) or not isinstance(kind.value, str):
        raise ConfigError(
            MISSING_KEY,
            f"{context.place}: the backend needs a type, such as tunnel_group",
            path=node.path,
            line=node.line,
            key=f"{where}.type",
        )
    factory = context.factories.get(kind.value)
    if factory is None:
        raise ConfigError(
            INVALID_VALUE,
            f"{context.place}: unknown backend type {kind.value!r}; the types"
            f" known here are {', '.join(sorted(context.factories))} (a"
            " plugin's type is known once its package is installed)",
            path=kind.path,
            line=kind.line,
            key=f"{where}.type",
        )
    options = {k: v for k, v in plain(node).items() if k != "type"}
    try:
        backend = factory.build(options, BackendBuilder(node, where, context))
        verifyObject(IBackend, backend)
    except ConfigError:
        raise
    except Invalid as error:
        raise ConfigError(
            INVALID_VALUE,
            f"{context.place}: the {kind.value} backend plugin built no"
            f" IBackend ({error})",
            path=node.path,
            line=node.line,
            key=where,
        ) from None
    except (ValueError, TypeError) as error:
        option = _option_named(node, str(error))
        at = node.entries[option] if option is not None else node
        raise ConfigError(
            INVALID_VALUE,
            f"{context.place}: {kind.value} backend: {error}",
            path=at.path,
            line=at.line,
            key=where if option is None else f"{where}.{option}",
        ) from None
    return backend


def _option_named(node: YamlMapping, sentence: str) -> str | None:
    """
    Find the option a factory's error names, as factories are asked to name
    the option at fault, so that the error points at its line.

    @return: the option of C{node} named first in C{sentence}, or C{None}.
    """
    found = []
    for key in node.entries:
        match = re.search(rf"(?<![\w.-]){re.escape(key)}(?![\w-])", sentence)
        if key != "type" and match is not None:
            found.append((match.start(), key))
    return min(found)[1] if found else None

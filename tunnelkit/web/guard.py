"""
What every request to the web interface must pass before it is served:
protection against DNS rebinding and against web pages driving the API.

A page on another site can make a browser send requests to the agent, but
two rules keep it from doing harm:

 - the C{Host} header must name a loopback address or C{localhost}, or an
   entry of C{web_allow_hosts}, so that a hostile name rebound to
   C{127.0.0.1} is refused (C{403});
 - a request that changes something (C{POST}, C{PUT}, C{PATCH}, or
   C{DELETE} with a body) must send C{Content-Type: application/json},
   which a browser sends across sites only after asking the agent first,
   something the agent never allows; form posts are refused (C{415}).
"""

from __future__ import annotations

import ipaddress
from typing import Sequence

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from tunnelkit.web.errors import HOST_NOT_ALLOWED, UNSUPPORTED_MEDIA_TYPE, ApiError

LOOPBACK_NAMES = frozenset({"localhost"})
"""Host names always allowed, besides loopback addresses."""

CHANGING_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
"""Methods whose requests must be JSON."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_without_port(host: str) -> str:
    """
    @return: the host of a C{Host} header value, in lower case, without
        its port or the brackets of an IPv6 address.
    """
    host = host.strip().lower()
    if host.startswith("["):
        closing = host.find("]")
        return host[1:closing] if closing != -1 else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class HostAllowList:
    """
    The hosts the web interface answers to: loopback addresses,
    C{localhost}, and the entries of C{web_allow_hosts}, each an IP address,
    a CIDR network, an exact host name, or C{.suffix} for every name that
    ends with it (and the bare name).
    """

    def __init__(self, entries: Sequence[str] = ()) -> None:
        self._networks: list[IpNetwork] = []
        self._names: set[str] = set(LOOPBACK_NAMES)
        self._suffixes: list[str] = []
        for entry in entries:
            text = entry.strip().lower()
            try:
                self._networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            if text.startswith("."):
                self._suffixes.append(text)
            else:
                self._names.add(host_without_port(text))

    def allows(self, host_header: str | None) -> bool:
        """
        @param host_header: the request's C{Host}, if it sent one.
        @return: whether the request may be served.
        """
        if not host_header:
            return False
        host = host_without_port(host_header)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self._names or any(
                host.endswith(suffix) or host == suffix[1:] for suffix in self._suffixes
            )
        if address.is_loopback:
            return True
        return any(address in network for network in self._networks)


def refusal(request: IRequest, hosts: HostAllowList) -> ApiError | None:
    """
    @return: why a request must not be served, or C{None}.
    """
    host = request.getHeader(b"host")
    if not hosts.allows(host.decode("latin-1") if host is not None else None):
        shown = host.decode("latin-1") if host is not None else "(none)"
        return ApiError(
            HOST_NOT_ALLOWED,
            f"the Host {shown!r} is not allowed; browse to localhost or"
            " 127.0.0.1, or add the name to web_allow_hosts",
        )
    method = request.method
    if method in CHANGING_METHODS or (method == b"DELETE" and _has_body(request)):
        content_type = request.getHeader(b"content-type") or b""
        media = content_type.partition(b";")[0].strip().lower()
        if media != b"application/json":
            shown_type = content_type.decode("latin-1") or "none"
            return ApiError(
                UNSUPPORTED_MEDIA_TYPE,
                f"the content type is {shown_type}; send application/json"
                " (form posts are refused)",
            )
    return None


def _has_body(request: IRequest) -> bool:
    length = request.getHeader(b"content-length")
    if request.getHeader(b"transfer-encoding") is not None:
        return True
    return length is not None and length.strip() not in (b"", b"0")


class GuardedResource(Resource):
    """
    The web interface's root: refuses what L{refusal} refuses, in the API's
    error shape, and hands everything else to the resource it wraps.
    """

    isLeaf = True

    def __init__(self, wrapped: IResource, hosts: HostAllowList) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.hosts = hosts

    def render(self, request: IRequest) -> bytes | int:
        refused = refusal(request, self.hosts)
        if refused is not None:
            return refused.render(request)
        result: bytes | int = self.wrapped.render(request)
        return result

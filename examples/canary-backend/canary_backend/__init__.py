"""
A backend for the tunnelkit edge that sends the HTTP requests carrying a
chosen header to a canary backend, and every other request (and every TCP
or TLS connection, which has no headers) to a stable one.

In C{edge.yml}::

    backend:
      type: canary
      header: X-Canary        # the header to look at (this is the default)
      value: "1"              # the value that selects the canary (default)
      canary: {type: tunnel_group, labels: {app: web, track: canary}}
      stable: {type: tunnel_group, labels: {app: web, track: stable}}

When the canary has no target (no canary tunnel is online), its requests
fall back to the stable backend, so starting and stopping canaries never
fails a request.
"""

from typing import Any, Mapping

from twisted.plugin import IPlugin
from zope.interface import implementer

from tunnelkit.edge.routing import BackendRequest, Unavailable
from tunnelkit.interfaces import IBackend, IBackendBuilder, IBackendFactory

__all__ = ["CanaryBackend", "CanaryFactory"]

OPTIONS = ("header", "value", "canary", "stable")


@implementer(IBackend)
class CanaryBackend:
    """
    Sends requests whose C{header} equals C{value} to C{canary}, the
    others to C{stable}. It keeps nothing between calls.
    """

    def __init__(
        self, header: str, value: str, canary: IBackend, stable: IBackend
    ) -> None:
        self.header = header
        self.value = value
        self.canary = canary
        self.stable = stable

    def choose(self, request: BackendRequest) -> Any:
        if request.header(self.header) == self.value:
            decision = self.canary.choose(request)
            if not isinstance(decision, Unavailable):
                return decision
        return self.stable.choose(request)


@implementer(IPlugin, IBackendFactory)
class CanaryFactory:
    """
    Builds L{CanaryBackend}s for the backends of type C{canary}.
    """

    type = "canary"

    def build(self, options: Mapping[str, Any], builder: IBackendBuilder) -> IBackend:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r}; a canary backend takes"
                f" {', '.join(OPTIONS)}"
            )
        header = options.get("header", "X-Canary")
        value = options.get("value", "1")
        if not isinstance(header, str) or not header:
            raise ValueError("header must name a header, such as X-Canary")
        if not isinstance(value, str):
            raise ValueError("value must be a string; quote numbers, as in '1'")
        for child in ("canary", "stable"):
            if child not in options:
                raise ValueError(f"the option {child!r} is missing: give a backend")
        return CanaryBackend(
            header, value, builder.child("canary"), builder.child("stable")
        )

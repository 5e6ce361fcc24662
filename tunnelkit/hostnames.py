"""
The shape of host names, as the agent's and the edge's configuration and
the edge's routing all check it, and the default ports of web schemes.
"""

import re

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"

DNS_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
"""A lower-case DNS name of one or more labels, such as C{app.example.com}."""

NAME_OR_WILDCARD = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
"""A DNS name, or C{*.} followed by one, such as C{*.example.com}."""

MAX_NAME_LENGTH = 253
"""The longest DNS name, in characters."""

DEFAULT_PORTS = {"http": 80, "https": 443}
"""The port each web scheme means when a URL names none."""


def is_name_or_wildcard(text: str) -> bool:
    """
    @param text: a lower-case name.
    @return: whether it is a DNS name or a wildcard over one, of at most
        L{MAX_NAME_LENGTH} characters.
    """
    return len(text) <= MAX_NAME_LENGTH and bool(NAME_OR_WILDCARD.match(text))

"""
The one error raised for a configuration file that cannot be used.

A L{ConfigError} names the file, the line and the dotted key a problem came
from, so a person can go straight to the offending value, and carries one of
the stable C{TK_CONFIG_*} codes listed here.
"""

from __future__ import annotations

import difflib
from typing import Iterable

from tunnelkit.errors import TunnelkitError

UNREADABLE = "TK_CONFIG_UNREADABLE"
SYNTAX = "TK_CONFIG_SYNTAX"
UNKNOWN_KEY = "TK_CONFIG_UNKNOWN_KEY"
INVALID_VALUE = "TK_CONFIG_INVALID_VALUE"
MISSING_KEY = "TK_CONFIG_MISSING_KEY"
VERSION = "TK_CONFIG_VERSION"

CODES = (UNREADABLE, SYNTAX, UNKNOWN_KEY, INVALID_VALUE, MISSING_KEY, VERSION)


class ConfigError(TunnelkitError):
    """
    A configuration file is missing, does not parse, or holds a bad value.

    C{str()} gives one line such as::

        ngrok.yml:12: tunnels.web.proto: 'htp' is not one of http, tcp, tls
        (TK_CONFIG_INVALID_VALUE)

    (on one line), leaving out the parts that are not known.

    @ivar code: one of the C{TK_CONFIG_*} codes.
    @ivar message: what is wrong and, where it helps, what to write instead.
    @ivar path: the file the problem is in, as it was named, or C{None}.
    @ivar line: the 1-based line of the problem, or C{None}.
    @ivar column: the 1-based column of the problem, or C{None}.
    @ivar key: the dotted key of the problem (C{tunnels.web.proto}), or
        C{None} when the problem is with the file as a whole.
    """

    def __init__(
        self,
        code: str,
        message: str,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.path = path
        self.line = line
        self.key = key
        self.column = column

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + ":"
            if self.line is not None:
                where += f"{self.line}:"
            where += " "
        if self.key:
            where += self.key + ": "
        return f"{where}{self.message} ({self.code})"

    def __repr__(self) -> str:
        return (
            f"ConfigError({self.code!r}, {self.message!r}, path={self.path!r}, "
            f"line={self.line!r}, key={self.key!r})"
        )


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    """
    Say that C{key} is not known, suggesting the closest known key if any.

    @param key: the key as written in the file.
    @param known: the keys allowed at that place.
    @return: a sentence such as C{unknown key 'protoo'; did you mean 'proto'?}
    """
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; remove it or check the documentation for valid keys"

"""
Reading typed values out of located YAML, shared by the agent and edge files.

L{Section} wraps one mapping of a configuration file together with its dotted
key prefix and turns each of its values into a Python value of the expected
type, or raises a L{ConfigError} that names the file, line and key. The
log settings both files share are read here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Collection, Iterable

from tunnelkit.config._errors import (
    INVALID_VALUE,
    MISSING_KEY,
    UNKNOWN_KEY,
    ConfigError,
    unknown_key_message,
)
from tunnelkit.config._parsing import (
    HostPort,
    parse_duration,
    parse_host_port,
    resolve_path,
)
from tunnelkit.config._yaml import (
    YamlEntry,
    YamlMapping,
    YamlNode,
    YamlScalar,
    YamlSequence,
    describe,
)

LOG_LEVELS = ("crit", "warn", "error", "info", "debug")
LOG_FORMATS = ("term", "logfmt", "json")
LOG_KEYS = ("log", "log_level", "log_format")


@dataclass(frozen=True)
class LogSettings:
    """
    Where and how a process logs, as the C{log*} keys configure it.

    @ivar log: C{"stdout"}, C{"stderr"}, C{"false"} (no log) or an absolute
        file path.
    @ivar log_level: one of C{crit}, C{warn}, C{error}, C{info}, C{debug}.
    @ivar log_format: one of C{term}, C{logfmt}, C{json}.
    """

    log: str = "false"
    log_level: str = "info"
    log_format: str = "term"


def _choices(options: Iterable[str]) -> str:
    return ", ".join(options)


class Section:
    """
    One mapping of a configuration file, read key by key into typed values.

    Every reading method returns C{default} when the key is absent or null,
    and raises a L{ConfigError} naming the value's file, line and dotted key
    when the value has the wrong type or is out of range.
    """

    def __init__(
        self, mapping: YamlMapping, prefix: str = "", line: int | None = None
    ) -> None:
        """
        @param mapping: the mapping to read.
        @param prefix: the dotted key of the mapping, C{""} at the top level.
        @param line: the line that introduced the mapping (its key's line),
            used for missing-key errors; defaults to the mapping's own line.
        """
        self.mapping = mapping
        self.prefix = prefix
        self.line = mapping.line if line is None else line

    def dotted(self, key: str) -> str:
        """
        @param key: a key of this mapping.
        @return: its full dotted key.
        """
        return f"{self.prefix}.{key}" if self.prefix else key

    def keys(self) -> list[str]:
        """
        @return: the keys present, in the order they were written.
        """
        return list(self.mapping.entries)

    def has(self, key: str) -> bool:
        """
        @param key: a key.
        @return: whether the key is present with a non-null value.
        """
        return self.node(key) is not None

    def entry(self, key: str) -> YamlEntry | None:
        """
        @param key: a key.
        @return: the key's entry, or C{None} when absent.
        """
        return self.mapping.entries.get(key)

    def node(self, key: str) -> YamlNode | None:
        """
        @param key: a key.
        @return: the key's value, or C{None} when absent or null.
        """
        entry = self.mapping.entries.get(key)
        if entry is None:
            return None
        value = entry.value
        if isinstance(value, YamlScalar) and value.value is None:
            return None
        return value

    def check_keys(self, allowed: Collection[str]) -> None:
        """
        Reject keys that are not in C{allowed}, suggesting a close one.

        @param allowed: the keys valid here.
        @raise ConfigError: C{TK_CONFIG_UNKNOWN_KEY} for the first unknown key.
        """
        for key, entry in self.mapping.entries.items():
            if key not in allowed:
                raise ConfigError(
                    UNKNOWN_KEY,
                    unknown_key_message(key, allowed),
                    path=entry.path,
                    line=entry.line,
                    key=self.dotted(key),
                )

    def key_error(
        self, key: str, message: str, code: str = INVALID_VALUE
    ) -> ConfigError:
        """
        Make an error about a key that is present, located at the key.

        @param key: the key.
        @param message: what is wrong.
        @param code: the error code.
        @return: the error, to be raised.
        """
        entry = self.mapping.entries[key]
        return ConfigError(
            code, message, path=entry.path, line=entry.line, key=self.dotted(key)
        )

    def invalid(self, key: str, node: YamlNode, message: str) -> ConfigError:
        """
        Make a C{TK_CONFIG_INVALID_VALUE} error located at a value.

        @param key: the dotted key below this section (C{"labels[2]"} works).
        @param node: the bad value.
        @param message: what is wrong.
        @return: the error, to be raised.
        """
        return ConfigError(
            INVALID_VALUE, message, path=node.path, line=node.line, key=self.dotted(key)
        )

    def missing(self, key: str, message: str) -> ConfigError:
        """
        Make a C{TK_CONFIG_MISSING_KEY} error located where this section starts.

        @param key: the key that is needed.
        @param message: why and what to add.
        @return: the error, to be raised.
        """
        return ConfigError(
            MISSING_KEY,
            message,
            path=self.mapping.path,
            line=self.line,
            key=self.dotted(key),
        )

    def require(self, key: str, why: str = "") -> YamlNode:
        """
        @param key: a key that must be present and not null.
        @param why: a sentence fragment appended to the error.
        @return: its value.
        @raise ConfigError: C{TK_CONFIG_MISSING_KEY} when it is not.
        """
        node = self.node(key)
        if node is None:
            raise self.missing(key, f"the key {key!r} is required{why}")
        return node

    def child(self, key: str) -> "Section | None":
        """
        @param key: a key whose value must be a mapping.
        @return: a section for it, or C{None} when absent or null.
        @raise ConfigError: when the value is not a mapping.
        """
        node = self.node(key)
        if node is None:
            return None
        if not isinstance(node, YamlMapping):
            raise self.invalid(key, node, f"expected a mapping, got {describe(node)}")
        entry = self.mapping.entries[key]
        return Section(node, self.dotted(key), entry.line)

    def text_of(self, key: str, node: YamlNode) -> str:
        """
        Read a value as text: scalars of any type give the text as written.

        @param key: the key, for errors.
        @param node: the value.
        @return: the text.
        @raise ConfigError: for a list or mapping.
        """
        if not isinstance(node, YamlScalar):
            raise self.invalid(key, node, f"expected a string, got {describe(node)}")
        if isinstance(node.value, str):
            return node.value
        return node.text

    def string(self, key: str, default: str | None = None) -> str | None:
        """
        @param key: a key holding a string.
        @param default: returned when absent or null.
        @return: the string.
        """
        node = self.node(key)
        if node is None:
            return default
        return self.text_of(key, node)

    def nonempty_string(self, key: str, default: str | None = None) -> str | None:
        """
        @param key: a key holding a string that must not be empty.
        @param default: returned when absent or null.
        @return: the string.
        """
        value = self.string(key, default)
        node = self.node(key)
        if node is not None and value is not None and not value.strip():
            raise self.invalid(key, node, "must not be empty")
        return value

    def choice(self, key: str, options: Collection[str], default: str) -> str:
        """
        @param key: a key holding one of a few words.
        @param options: the words allowed (booleans read as C{true}/C{false}).
        @param default: returned when absent or null.
        @return: the word.
        """
        node = self.node(key)
        if node is None:
            return default
        if isinstance(node, YamlScalar) and isinstance(node.value, bool):
            word = "true" if node.value else "false"
        else:
            word = self.text_of(key, node)
        if word not in options:
            raise self.invalid(key, node, f"{word!r} is not one of {_choices(options)}")
        return word

    def boolean(self, key: str, default: bool) -> bool:
        """
        @param key: a key holding C{true} or C{false}.
        @param default: returned when absent or null.
        @return: the boolean.
        """
        node = self.node(key)
        if node is None:
            return default
        if not (isinstance(node, YamlScalar) and isinstance(node.value, bool)):
            raise self.invalid(
                key, node, f"expected true or false, got {describe(node)}"
            )
        return node.value

    def integer(self, key: str, default: int) -> int:
        """
        @param key: a key holding a whole number.
        @param default: returned when absent or null.
        @return: the number.
        """
        node = self.node(key)
        if node is None:
            return default
        value = node.value if isinstance(node, YamlScalar) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.invalid(
                key, node, f"expected a whole number, got {describe(node)}"
            )
        return value

    def duration(self, key: str, default: float) -> float:
        """
        @param key: a key holding a positive Go-style duration (C{10s}).
        @param default: returned when absent or null, in seconds.
        @return: the duration in seconds.
        """
        node = self.node(key)
        if node is None:
            return default
        text = self.text_of(key, node)
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise self.invalid(key, node, str(e))
        if seconds <= 0:
            raise self.invalid(key, node, f"{text!r} must be a positive duration")
        return seconds

    def host_port(
        self,
        key: str,
        default: HostPort | None,
        default_port: int | None = None,
        allow_port_zero: bool = False,
    ) -> HostPort | None:
        """
        @param key: a key holding C{host:port}.
        @param default: returned when absent or null.
        @param default_port: the port used when only a host is written.
        @param allow_port_zero: whether port C{0} is acceptable.
        @return: the address.
        """
        node = self.node(key)
        if node is None:
            return default
        return self.host_port_of(key, node, default_port, allow_port_zero)

    def host_port_of(
        self,
        key: str,
        node: YamlNode,
        default_port: int | None = None,
        allow_port_zero: bool = False,
    ) -> HostPort:
        """
        Read a value (possibly a list item) as C{host:port}.

        @param key: the dotted key below this section, for errors.
        @param node: the value.
        @param default_port: the port used when only a host is written.
        @param allow_port_zero: whether port C{0} is acceptable.
        @return: the address.
        """
        try:
            return parse_host_port(
                self.text_of(key, node), default_port, allow_port_zero
            )
        except ValueError as e:
            raise self.invalid(key, node, str(e))

    def items(self, key: str) -> list[tuple[str, YamlNode]] | None:
        """
        @param key: a key holding a list.
        @return: each item with its dotted key below this section
            (C{key[0]}, C{key[1]}, ...), or C{None} when absent or null.
        """
        node = self.node(key)
        if node is None:
            return None
        if not isinstance(node, YamlSequence):
            raise self.invalid(key, node, f"expected a list, got {describe(node)}")
        return [(f"{key}[{i}]", item) for i, item in enumerate(node.items)]

    def string_list(self, key: str) -> tuple[str, ...] | None:
        """
        @param key: a key holding a list of strings.
        @return: the strings, or C{None} when absent or null.
        """
        items = self.items(key)
        if items is None:
            return None
        return tuple(self.text_of(item_key, item) for item_key, item in items)

    def file_path(self, key: str, must_exist: bool = True) -> str | None:
        """
        @param key: a key holding a file path, relative to the file it is in.
        @param must_exist: whether the file must exist now.
        @return: the absolute path, or C{None} when absent or null.
        """
        node = self.node(key)
        if node is None:
            return None
        text = self.text_of(key, node)
        if not text.strip():
            raise self.invalid(key, node, "must not be empty")
        path = resolve_path(text, node.path)
        if must_exist and not os.path.isfile(path):
            raise self.invalid(
                key, node, f"the file {path!r} does not exist or is not a file"
            )
        return path

    def log_settings(self) -> LogSettings:
        """
        Read the C{log}, C{log_level} and C{log_format} keys.

        @return: the settings, with defaults for absent keys.
        """
        log = "false"
        node = self.node("log")
        if node is not None:
            if isinstance(node, YamlScalar) and node.value is False:
                log = "false"
            else:
                text = self.text_of("log", node)
                if not text.strip() or text == "true":
                    raise self.invalid(
                        "log", node, "expected stdout, stderr, false or a file path"
                    )
                if text in ("stdout", "stderr", "false"):
                    log = text
                else:
                    log = resolve_path(text, node.path)
        return LogSettings(
            log=log,
            log_level=self.choice("log_level", LOG_LEVELS, "info"),
            log_format=self.choice("log_format", LOG_FORMATS, "term"),
        )

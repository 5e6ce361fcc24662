"""
YAML loading that remembers, for every value, the file and line it came from.

Files are parsed with C{yaml.SafeLoader} into composed nodes, and each node is
turned into a small immutable L{YamlNode} (scalar, sequence or mapping) that
carries its file, line and column. Several files are combined with
L{merge_mappings}, which keeps each value's own location, so an error found
after merging still points at the line the bad value was written on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tunnelkit.config._errors import INVALID_VALUE, SYNTAX, UNREADABLE, ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlScalar:
    """
    A single value: a string, number, boolean, date or null.

    @ivar path: the file the value was read from.
    @ivar line: its 1-based line.
    @ivar column: its 1-based column.
    @ivar value: the value as YAML's safe schema reads it (C{None} for null).
    @ivar text: the characters as written, without quotes.
    @ivar plain: C{True} when the value was written without quotes.
    """

    path: str
    line: int
    column: int
    value: object
    text: str
    plain: bool


@dataclass(frozen=True)
class YamlSequence:
    """
    A list of values.

    @ivar path: the file the list was read from.
    @ivar line: the 1-based line it starts on.
    @ivar column: the 1-based column it starts on.
    @ivar items: the list items in order.
    """

    path: str
    line: int
    column: int
    items: tuple["YamlNode", ...]


@dataclass(frozen=True)
class YamlEntry:
    """
    One key of a mapping with its value.

    @ivar key: the key as written.
    @ivar path: the file the key was written in.
    @ivar line: the 1-based line of the key.
    @ivar value: the value of the key.
    """

    key: str
    path: str
    line: int
    value: "YamlNode"


@dataclass(frozen=True)
class YamlMapping:
    """
    A mapping from string keys to values, in the order they were written.

    @ivar path: the file the mapping was read from.
    @ivar line: the 1-based line it starts on.
    @ivar column: the 1-based column it starts on.
    @ivar entries: the keys and their values.
    """

    path: str
    line: int
    column: int
    entries: dict[str, YamlEntry]


YamlNode = Union[YamlScalar, YamlSequence, YamlMapping]


def describe(node: YamlNode) -> str:
    """
    Name the kind of a value for an error message.

    @param node: the value.
    @return: C{a list}, C{a mapping}, C{a boolean}, C{a number}, C{null}, ...
    """
    if isinstance(node, YamlSequence):
        return "a list"
    if isinstance(node, YamlMapping):
        return "a mapping"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def empty_mapping(path: str) -> YamlMapping:
    """
    Make the mapping an empty file reads as.

    @param path: the file it stands for.
    @return: a mapping without keys at line 1.
    """
    return YamlMapping(path=path, line=1, column=1, entries={})


def read_yaml_file(path: str) -> YamlMapping:
    """
    Read and parse one YAML file whose top level is a mapping.

    @param path: the file to read, as the user named it.
    @return: the top-level mapping (empty for an empty file).
    @raise ConfigError: C{TK_CONFIG_UNREADABLE} when the file cannot be read,
        C{TK_CONFIG_SYNTAX} when it is not UTF-8 or not valid YAML, and
        C{TK_CONFIG_INVALID_VALUE} when its top level is not a mapping.
    """
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except FileNotFoundError:
        raise ConfigError(
            UNREADABLE,
            "the file does not exist; create it or give the path of an "
            "existing configuration file",
            path=path,
        )
    except OSError as e:
        raise ConfigError(
            UNREADABLE,
            f"the file cannot be read ({e.strerror or e}); check the path "
            "and its permissions",
            path=path,
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            SYNTAX,
            f"the file is not UTF-8 text (bad byte at offset {e.start}); save "
            "it as UTF-8",
            path=path,
        )
    return parse_yaml(text, path)


def parse_yaml(text: str, path: str) -> YamlMapping:
    """
    Parse YAML text whose top level is a mapping.

    @param text: the document.
    @param path: the file name used in locations and errors.
    @return: the top-level mapping (empty for an empty document).
    @raise ConfigError: C{TK_CONFIG_SYNTAX} or C{TK_CONFIG_INVALID_VALUE} as
        for L{read_yaml_file}.
    """
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return empty_mapping(path)
            converted = _Conversion(loader, path).convert(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e, path)
    except yaml.YAMLError as e:
        raise ConfigError(
            SYNTAX, f"the file is not valid YAML: {e}; fix it and try again", path=path
        )
    if not isinstance(converted, YamlMapping):
        raise ConfigError(
            INVALID_VALUE,
            f"the file holds {describe(converted)}, but it must be a mapping "
            "of keys such as 'version: \"2\"'",
            path=path,
            line=converted.line,
        )
    return converted


def merge_mappings(base: YamlMapping, override: YamlMapping) -> YamlMapping:
    """
    Merge two mappings the way ngrok merges configuration files.

    Keys of C{override} win. Where both sides hold a mapping under the same
    key the two are merged key by key, recursively; anything else (a scalar
    or a list) from C{override} replaces what C{base} had, wholesale.

    @param base: the mapping from the earlier file.
    @param override: the mapping from the later file.
    @return: a new mapping; each value keeps the location it was read from.
    """
    entries = dict(base.entries)
    for key, entry in override.entries.items():
        earlier = entries.get(key)
        if (
            earlier is not None
            and isinstance(earlier.value, YamlMapping)
            and isinstance(entry.value, YamlMapping)
        ):
            merged = merge_mappings(earlier.value, entry.value)
            entry = YamlEntry(key=key, path=entry.path, line=entry.line, value=merged)
        entries[key] = entry
    return YamlMapping(
        path=override.path, line=override.line, column=override.column, entries=entries
    )


def _syntax_error(error: yaml.MarkedYAMLError, path: str) -> ConfigError:
    """
    Turn a PyYAML error into a L{ConfigError} with the line and column.

    @param error: the error PyYAML raised.
    @param path: the file being read.
    @return: a C{TK_CONFIG_SYNTAX} error.
    """
    mark = error.problem_mark or error.context_mark
    problem = error.problem or error.context or "unreadable YAML"
    line = column = None
    where = ""
    if mark is not None:
        line = mark.line + 1
        column = mark.column + 1
        where = f" at line {line}, column {column}"
    return ConfigError(
        SYNTAX,
        f"the file is not valid YAML{where}: {problem}; fix the indentation, "
        "quoting or brackets there",
        path=path,
        line=line,
        column=column,
    )


class _Conversion:
    """
    Turns composed PyYAML nodes into located L{YamlNode}s.

    Aliases are converted once and shared, so a document cannot grow without
    bound through nested aliases, and an alias to one of its own parents is
    reported as an error.
    """

    def __init__(self, loader: yaml.SafeLoader, path: str) -> None:
        self._loader = loader
        self._path = path
        self._done: dict[int, YamlNode] = {}
        self._open: set[int] = set()

    def _where(self, node: Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _fail(self, node: Node, message: str) -> ConfigError:
        line, column = self._where(node)
        return ConfigError(SYNTAX, message, path=self._path, line=line, column=column)

    def convert(self, node: Node) -> YamlNode:
        """
        Convert one node and everything below it.

        @param node: a composed node.
        @return: the located value.
        @raise ConfigError: C{TK_CONFIG_SYNTAX} for an unknown tag, a
            duplicate key, a key that is not a scalar or a recursive alias.
        """
        done = self._done.get(id(node))
        if done is not None:
            return done
        if id(node) in self._open:
            raise self._fail(node, "an alias refers to a value that contains it")
        self._open.add(id(node))
        try:
            result = self._convert(node)
        finally:
            self._open.discard(id(node))
        self._done[id(node)] = result
        return result

    def _convert(self, node: Node) -> YamlNode:
        line, column = self._where(node)
        if isinstance(node, ScalarNode):
            try:
                value = self._loader.construct_object(node, deep=True)
            except yaml.MarkedYAMLError as e:
                raise _syntax_error(e, self._path)
            return YamlScalar(
                path=self._path,
                line=line,
                column=column,
                value=value,
                text=node.value,
                plain=node.style is None,
            )
        if isinstance(node, SequenceNode):
            items = tuple(self.convert(item) for item in node.value)
            return YamlSequence(path=self._path, line=line, column=column, items=items)
        if isinstance(node, MappingNode):
            return self._mapping(node)
        raise self._fail(node, "unsupported YAML node")

    def _mapping(self, node: MappingNode) -> YamlMapping:
        line, column = self._where(node)
        entries: dict[str, YamlEntry] = {}
        merged: dict[str, YamlEntry] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node):
                    for key, entry in source.entries.items():
                        merged.setdefault(key, entry)
                continue
            if not isinstance(key_node, ScalarNode):
                raise self._fail(
                    key_node, "a key must be a plain name, not a list or mapping"
                )
            key = key_node.value
            key_line, _ = self._where(key_node)
            if key in entries:
                raise self._fail(
                    key_node,
                    f"the key {key!r} appears twice in the same mapping (first "
                    f"on line {entries[key].line}); keep one of them",
                )
            entries[key] = YamlEntry(
                key=key, path=self._path, line=key_line, value=self.convert(value_node)
            )
        for key, entry in merged.items():
            entries.setdefault(key, entry)
        return YamlMapping(path=self._path, line=line, column=column, entries=entries)

    def _merge_sources(self, node: Node) -> list[YamlMapping]:
        converted = self.convert(node)
        if isinstance(converted, YamlMapping):
            return [converted]
        if isinstance(converted, YamlSequence) and all(
            isinstance(item, YamlMapping) for item in converted.items
        ):
            return [item for item in converted.items if isinstance(item, YamlMapping)]
        raise self._fail(node, "a '<<' merge key needs a mapping or a list of mappings")

"""
Setting one top-level key of the agent file, as C{tunnelkit config add-*} do.

L{set_agent_config_key} changes only the text of that key (or appends it),
so comments, ordering and every other line stay as the user wrote them; it
adds C{version: "2"} when the file has no version, checks that the result
loads, and replaces the file atomically.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tunnelkit.config._errors import (
    SYNTAX,
    UNKNOWN_KEY,
    UNREADABLE,
    ConfigError,
    unknown_key_message,
)
from tunnelkit.config._yaml import parse_yaml
from tunnelkit.config.agent import AGENT_CONFIG_VERSION, AGENT_KEYS, build_agent_config

_STRUCTURED_KEYS = frozenset({"tunnels", "web_allow_hosts"})
_EDITABLE_KEYS = AGENT_KEYS - _STRUCTURED_KEYS
_TYPED_KEYS = frozenset(
    {
        "web_addr",
        "inspect_db_size",
        "inspect_body_size",
        "console_ui",
        "update_check",
        "remote_management",
    }
)
_VERSION_LINE = f'version: "{AGENT_CONFIG_VERSION}"'


def set_agent_config_key(path: str, key: str, value: str) -> None:
    """
    Set a top-level key of the agent configuration file.

    A missing file is created (with its directories) holding
    C{version: "2"} and the key, readable only by its owner since it may
    hold a token. An existing file keeps every line except the key's own,
    which is rewritten in place, or appended when absent; C{version: "2"} is
    added above the first key when the file has none. Values are written as
    quoted strings, except that C{true}, C{false} and whole numbers stay
    unquoted for the keys that take them (C{web_addr}, C{inspect_db_size},
    C{console_ui}, C{update_check}, C{remote_management}).

    @param path: the agent configuration file.
    @param key: a top-level key, such as C{authtoken} or C{server_addr}.
    @param value: the new value, as the user typed it.
    @raise ConfigError: C{TK_CONFIG_UNKNOWN_KEY} for a key that is not a
        top-level scalar key, any loading error of the existing file or of
        the result (the file is then left unchanged; an error in the new
        value names the value given, not a line of a file that does not
        hold it), or C{TK_CONFIG_UNREADABLE} when the file cannot be read or
        written.
    """
    if key not in _EDITABLE_KEYS:
        message = unknown_key_message(key, _EDITABLE_KEYS)
        if key in _STRUCTURED_KEYS:
            message = f"{key!r} holds a list or map; edit the file to change it"
        raise ConfigError(UNKNOWN_KEY, message, path=path, key=key)

    text = _read_text(path)
    edited = _edit(text, path, key, _render(key, value))

    try:
        build_agent_config([parse_yaml(edited, path)], [path])
    except ConfigError as error:
        if error.key != key:
            raise
        given = "" if key == "authtoken" else f" ({value!r})"
        raise ConfigError(
            error.code,
            f"the value given on the command line{given}: {error.message};"
            f" {path} is left unchanged",
            key=key,
        )
    _replace_file(path, edited)


def _render(key: str, value: str) -> str:
    if key in _TYPED_KEYS:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, bool):
            return "true" if parsed else "false"
        if isinstance(parsed, int) and value.strip().lstrip("-").isdigit():
            return str(parsed)
    return json.dumps(value, ensure_ascii=False)


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(
            UNREADABLE,
            f"the file cannot be read ({e.strerror or e}); check its permissions",
            path=path,
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(
            SYNTAX, "the file is not UTF-8 text; save it as UTF-8", path=path
        )


def _content_end(node: Node) -> int:
    """
    Find where a value's own text ends, leaving out comments and blank
    lines that PyYAML counts as part of a block collection.
    """
    if isinstance(node, MappingNode) and node.value and node.flow_style is False:
        return _content_end(node.value[-1][1])
    if isinstance(node, SequenceNode) and node.value and node.flow_style is False:
        return _content_end(node.value[-1])
    return node.end_mark.index


def _edit(text: str | None, path: str, key: str, rendered: str) -> str:
    line = f"{key}: {rendered}"
    if text is None:
        if key == "version":
            return line + "\n"
        return f"{_VERSION_LINE}\n{line}\n"

    parse_yaml(text, path)
    newline = "\r\n" if "\r\n" in text else "\n"
    root = yaml.SafeLoader(text).get_single_node()
    if root is None:
        prefix = text if not text or text.endswith(("\n", "\r")) else text + newline
        version = "" if key == "version" else _VERSION_LINE + newline
        return prefix + version + line + newline
    assert isinstance(root, MappingNode)
    if root.flow_style:
        return _rewrite_flow(text, key, rendered)

    keys = {k.value: (k, v) for k, v in root.value if isinstance(k, ScalarNode)}
    indent = " " * root.start_mark.column
    if key in keys:
        key_node, value_node = keys[key]
        start = key_node.start_mark.index
        end = _content_end(value_node)
        end = start + len(text[start:end].rstrip())
        edited = text[:start] + line + text[end:]
    else:
        body = text if text.endswith(("\n", "\r")) else text + newline
        edited = body + indent + line + newline

    if key != "version" and "version" not in keys and root.value:
        first = root.value[0][0].start_mark.index
        line_start = text.rfind("\n", 0, first) + 1
        edited = (
            edited[:line_start] + indent + _VERSION_LINE + newline + edited[line_start:]
        )
    return edited


def _rewrite_flow(text: str, key: str, rendered: str) -> str:
    """
    Rewrite a file whose top level is a flow mapping (C{{a: 1}}); such
    files are rewritten whole, so comments in them are not kept.
    """
    data = yaml.safe_load(text)
    data[key] = yaml.safe_load(rendered)
    data.setdefault("version", AGENT_CONFIG_VERSION)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _replace_file(path: str, text: str) -> None:
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = 0o600
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=".tunnelkit-", suffix=".tmp"
        )
    except OSError as e:
        raise ConfigError(
            UNREADABLE,
            f"the file cannot be written ({e.strerror or e}); check the "
            "directory's permissions",
            path=path,
        )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(text.encode("utf-8"))
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except OSError as e:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise ConfigError(
            UNREADABLE,
            f"the file cannot be written ({e.strerror or e}); check the "
            "directory's permissions and free space",
            path=path,
        )

"""
Which file a request path names under the file server's root, and never
one outside it.

A path is split on C{/} before any percent-decoding, so an encoded slash or
backslash cannot make a separator; each segment is then decoded to bytes
and refused if it is empty (a double slash), C{.} or C{..}, or holds a
slash, a backslash or a NUL byte. The joined path is resolved with
C{realpath}, following every symlink, and must lie inside the root's own
real path: a symlink inside the root to a place inside the root is
followed, one that leads out is refused as if the file did not exist.

Known limit: a directory on the path swapped for a symlink between the
check here and the file's opening is not caught. The file server opens the
resolved path without following a symlink in its last component, and reads
nothing but a regular file.
"""

import os
import stat
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

_FORBIDDEN_IN_NAME = (b"/", b"\\", b"\x00")


class PathRefused(Exception):
    """
    A request path that names nothing the file server may serve.

    @ivar status: the HTTP status to answer with: C{400} for a path that is
        malformed, C{404} for one that names nothing servable.
    @ivar sentence: what is wrong, for the error page.
    """

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(status, sentence)
        self.status = status
        self.sentence = sentence


def _not_found() -> PathRefused:
    return PathRefused(404, "There is no file at this address.")


@dataclass(frozen=True)
class Target:
    """
    What a request path names.

    @ivar path: the real path of the file or directory, inside the root.
    @ivar name: the last name of the path as requested (the root's own name
        for the root), which gives a file its content type.
    @ivar is_directory: whether it is a directory.
    @ivar at_root: whether it is the root itself.
    @ivar wants_directory: whether the request path ends with C{/}.
    """

    path: str
    name: str
    is_directory: bool
    at_root: bool
    wants_directory: bool


def request_names(raw_path: bytes) -> tuple[list[bytes], bool]:
    """
    Split a request path into the file names it walks through.

    @param raw_path: the path of the request target, still percent-encoded,
        without the query.
    @return: the decoded names, and whether the path ends with C{/}.
    @raise PathRefused: C{400} for a path that does not start with C{/} or
        holds a NUL byte, C{404} for an empty segment, C{.}, C{..}, or a
        name holding a slash or backslash once decoded.
    """
    if not raw_path.startswith(b"/"):
        raise PathRefused(400, "The request path must start with a slash.")
    segments = raw_path[1:].split(b"/")
    trailing = segments[-1] == b""
    if trailing:
        segments.pop()
    names = []
    for segment in segments:
        name = unquote_to_bytes(segment)
        if b"\x00" in name:
            raise PathRefused(400, "The request path holds a NUL byte.")
        if name in (b"", b".", b"..") or any(c in name for c in _FORBIDDEN_IN_NAME):
            raise _not_found()
        names.append(name)
    return names, trailing


def _inside(path: str, root: str) -> bool:
    """
    @return: whether the real path C{path} is C{root} or lies below it.
    """
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve(root: str, raw_path: bytes) -> Target:
    """
    Find what a request path names under C{root}.

    @param root: the absolute path served, a directory or a single file.
    @param raw_path: the request path, still percent-encoded.
    @return: the directory or regular file it names.
    @raise PathRefused: when the path is malformed, leads out of the root,
        or names nothing, or something that is neither a directory nor a
        regular file.
    """
    names, trailing = request_names(raw_path)
    root_real = os.path.realpath(root)
    try:
        root_is_directory = stat.S_ISDIR(os.stat(root_real).st_mode)
    except OSError:
        raise _not_found()

    if not root_is_directory:
        if names and names != [os.fsencode(os.path.basename(root_real))]:
            raise _not_found()
        return Target(root_real, os.path.basename(root), False, not names, trailing)

    candidate = os.path.join(root_real, *(os.fsdecode(name) for name in names))
    real = os.path.realpath(candidate)
    if not _inside(real, root_real):
        raise _not_found()
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise _not_found()
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise _not_found()
    name = os.fsdecode(names[-1]) if names else os.path.basename(root_real)
    return Target(real, name, stat.S_ISDIR(mode), not names, trailing)


def servable_entry(
    directory: str, name: str, root: str
) -> tuple[str, os.stat_result] | None:
    """
    Check one entry of a directory, for a listing or an index file.

    @param directory: the real path of the directory.
    @param name: the entry's name, as C{os.listdir} gives it.
    @param root: the real path of the root.
    @return: the real path and status of what the entry leads to, or
        C{None} when it leads out of the root, nowhere, or to something that
        is neither a directory nor a regular file.
    """
    real = os.path.realpath(os.path.join(directory, name))
    if not _inside(real, root):
        return None
    try:
        status = os.stat(real)
    except OSError:
        return None
    if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
        return None
    return real, status

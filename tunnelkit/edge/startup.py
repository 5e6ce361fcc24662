"""
What the edge checks and opens as it starts: its state directory and its
listeners, with errors that name the key of C{edge.yml} at fault, where the
file sets it, and what to do.
"""

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

from tunnelkit.config import EdgeConfig
from tunnelkit.errors import TunnelkitError

_log = Logger()

STATE_DIR_UNWRITABLE = "TK_STATE_DIR_UNWRITABLE"
LISTEN_FAILED = "TK_LISTEN_FAILED"


def state_dir_unwritable(
    config: EdgeConfig, error: OSError | TunnelkitError
) -> TunnelkitError:
    """
    Describe a state directory the edge cannot create or write, naming the
    C{state_dir} key where the file sets it.

    @param error: the operating system's error, or the one
        L{ensure_edge_certificate} raised.
    @return: a C{TK_STATE_DIR_UNWRITABLE} error.
    """
    if isinstance(error, TunnelkitError):
        problem = error.message.split(";")[0]
    else:
        path = f" ({error.filename})" if error.filename else ""
        problem = f"cannot write the edge state{path}: {error.strerror or error}"
    return TunnelkitError(
        STATE_DIR_UNWRITABLE,
        f"{config.where('state_dir')}: {problem}; make {config.state_dir} a"
        " directory the edge's user can write, or set state_dir to another"
        " directory",
    )


async def listen(
    reactor: Any, config: EdgeConfig, key: str, factory: IProtocolFactory
) -> IListeningPort:
    """
    Listen on the endpoint of one listener key of C{edge.yml}.

    @raise TunnelkitError: C{TK_LISTEN_FAILED} naming the key, where the
        file sets it, and the address, when the port is taken or the
        interface is not one of this machine's.
    """
    description = getattr(config, key)
    try:
        return await serverFromString(reactor, description).listen(factory)
    except CannotListenError as error:
        raise listen_failed(config.where(key), description, error) from error


def listen_failed(where: str, address: str, error: CannotListenError) -> TunnelkitError:
    """
    Describe a listener the edge cannot open.

    @param where: the key at fault, as L{EdgeConfig.where} gives it.
    @param address: the endpoint it asked for, or C{""}.
    @return: a C{TK_LISTEN_FAILED} error with the operating system's reason.
    """
    reason = error.socketError
    if isinstance(reason, OSError):
        reason = reason.strerror or reason
    host = error.interface or "0.0.0.0"
    shown = f"[{host}]:{error.port}" if ":" in host else f"{host}:{error.port}"
    if address:
        shown += f" ({address})"
    return TunnelkitError(
        LISTEN_FAILED,
        f"{where}: cannot listen on {shown}: {reason}; stop the program that"
        " holds the port, or give a free port on an address of this machine",
    )


def warn_if_no_agent_admitted(config: EdgeConfig) -> None:
    """
    Warn that no agent can connect when the file lists no authtokens and
    does not set C{allow_anonymous}.
    """
    if config.authtokens or config.allow_anonymous:
        return
    _log.warn(
        "no agent can connect: {path} lists no authtokens and does not set"
        " allow_anonymous; add an authtoken, or set allow_anonymous: true",
        path=config.path or "the configuration",
    )

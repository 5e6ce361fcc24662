"""
C{twistd -n tunnel}: the agent as a twistd service. It starts every tunnel
in the config files unless tunnels are named, as C{tunnelkit start --all}.
"""

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnelkit.agent.app import AgentApplication
from tunnelkit.cli import CommandFailed, authtoken_for, select_tunnels
from tunnelkit.config import ConfigError, load_agent_config
from tunnelkit.errors import TunnelkitError
from tunnelkit.heap import keep_read_buffers_on_heap
from tunnelkit.options import AgentServiceOptions
from tunnelkit.runtime import add_twistd_logs, exit_after_shutdown, stop_reactor

Options = AgentServiceOptions

_log = Logger()


def makeService(options: AgentServiceOptions) -> AgentApplication:
    """
    Build the agent from the command line and its config files.

    @raise SystemExit: with the error for a bad config, so nothing starts.
    """
    from twisted.internet import reactor

    keep_read_buffers_on_heap()
    try:
        config = load_agent_config(options["configs"])
        tunnels = select_tunnels("start", options, config)
        add_twistd_logs(options, config.log, config.log_format, config.log_level)
    except (ConfigError, TunnelkitError) as error:
        raise SystemExit(f"ERROR: {error}")
    except CommandFailed as failure:
        raise SystemExit(failure.message.rstrip("\n"))

    def stopped(outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            exit_after_shutdown(1)
        reactor.callWhenRunning(stop_reactor, reactor)

    def failed(failure: Failure) -> None:
        _log.critical(
            "the agent could not start: {error}", error=failure.getErrorMessage()
        )
        stopped(failure.value)

    app = AgentApplication(
        config, tunnels, reactor, authtoken_for(options, config), on_stopped=stopped
    )
    app.ready.addErrback(failed)
    return app

"""
C{twistd -n tunnel-edge --config edge.yml}: the edge as a twistd service.
"""

from tunnelkit.config import ConfigError, load_edge_config
from tunnelkit.edge.labeled import reload_on_sighup
from tunnelkit.edge.server import EdgeServer
from tunnelkit.errors import TunnelkitError
from tunnelkit.heap import keep_read_buffers_on_heap
from tunnelkit.options import EdgeOptions
from tunnelkit.runtime import add_twistd_logs, exit_after_shutdown

Options = EdgeOptions


def makeService(options: EdgeOptions) -> EdgeServer:
    """
    Build the edge from its config file; C{SIGHUP} reloads its edges.

    @raise SystemExit: with the error for a bad config, so nothing starts.
    """
    from twisted.internet import reactor

    keep_read_buffers_on_heap()
    try:
        config = load_edge_config(options["config"])
        add_twistd_logs(options, config.log, config.log_format, config.log_level)
    except (ConfigError, TunnelkitError) as error:
        raise SystemExit(f"ERROR: {error}")
    server = EdgeServer(config, reactor)
    server.start_failed.addCallback(lambda _: exit_after_shutdown(1))
    reload_on_sighup(server)
    return server

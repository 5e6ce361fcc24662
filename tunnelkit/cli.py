"""
The C{tunnelkit} command: parse the flags, load the config files, run the
agent or the edge in the foreground, and report in words people and scripts
rely on.
"""

import contextlib
import os
import select
import sys
from typing import IO, Any, Sequence

from twisted.python import usage
from twisted.python.failure import Failure

from tunnelkit import __version__
from tunnelkit.config import (
    INVALID_VALUE,
    AgentConfig,
    ConfigError,
    TunnelDefinition,
    default_agent_config_path,
    load_agent_config,
    load_edge_config,
    parse_host_port,
    parse_upstream_address,
    set_agent_config_key,
)
from tunnelkit.addresses import format_address
from tunnelkit.errors import TunnelkitError
from tunnelkit.heap import keep_read_buffers_on_heap
from tunnelkit.options import TunnelkitOptions
from tunnelkit.runtime import install_logs, stop_reactor

COMMAND_LINE_TUNNEL = "command_line"
"""The name ngrok gives a tunnel started from the command line."""


class CommandFailed(Exception):
    """
    A command ends with a message for standard error and an exit code.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the command and exit with its status.
    """
    keep_read_buffers_on_heap()
    install_reactor()
    sys.exit(run(sys.argv[1:] if argv is None else list(argv)))


def install_reactor() -> bool:
    """
    Run on L{tunnelkit.reactor.TunnelReactor}, Twisted's epoll reactor
    without a logging context around each read and write, unless a reactor
    is installed already or the platform has no epoll (then Twisted's
    default reactor runs).

    @return: whether it was installed.
    """
    if "twisted.internet.reactor" in sys.modules or not hasattr(select, "epoll"):
        return False
    from tunnelkit.reactor import install

    install()
    return True


def run(
    argv: list[str],
    stdout: IO[str] = sys.stdout,
    stderr: IO[str] = sys.stderr,
    reactor: Any = None,
) -> int:
    """
    Run one C{tunnelkit} command.

    @return: the exit status.
    """
    if argv[:1] == ["-v"]:
        argv = ["version"]
    options = TunnelkitOptions()
    try:
        with contextlib.redirect_stdout(stdout):
            options.parseOptions(argv)
    except usage.UsageError as error:
        stderr.write(f"ERROR: {error}\n")
        stderr.write(f"Run '{_usage_command(options)} --help' for usage.\n")
        return 2
    except SystemExit as leaving:
        return leaving.code if isinstance(leaving.code, int) else 0

    command = options.subCommand
    sub = options.subOptions
    try:
        if command == "version":
            stdout.write(f"tunnelkit version {__version__}\n")
            return 0
        if command == "config":
            return _config_command(sub, stdout)
        if command == "edge":
            return _run_edge(sub, stdout, stderr, reactor)
        assert command is not None
        return _run_agent(command, sub, stdout, stderr, reactor)
    except (ConfigError, TunnelkitError) as error:
        stderr.write(f"ERROR: {error}\n")
        return 1
    except CommandFailed as failure:
        stderr.write(failure.message)
        return failure.code


def _usage_command(options: usage.Options) -> str:
    words = ["tunnelkit"]
    while options.subCommand is not None:
        words.append(options.subCommand)
        options = options.subOptions
    return " ".join(words)


# tunnelkit config ...


def _config_path(options: usage.Options) -> str:
    configs = options["configs"]
    return configs[-1] if configs else default_agent_config_path()


def _config_command(options: usage.Options, stdout: IO[str]) -> int:
    sub = options.subOptions
    if options.subCommand == "check":
        config = load_agent_config(sub["configs"])
        if not config.paths:
            stdout.write(
                f"No configuration file at {default_agent_config_path()}; the"
                " defaults apply\n"
            )
        for path in config.paths:
            stdout.write(f"Valid configuration file at {path}\n")
        return 0
    path = _config_path(sub)
    value = sub["value"]
    if options.subCommand == "add-server-addr":
        try:
            parse_host_port(value)
        except ValueError as error:
            raise ConfigError(
                INVALID_VALUE,
                f"{value!r} given on the command line is not a server address:"
                f" {error}. Write HOST:PORT, e.g. tunnels.example.com:4443.",
                key="server_addr",
            )
        set_agent_config_key(path, "server_addr", value)
        stdout.write(f"Server address saved to configuration file: {path}\n")
        return 0
    set_agent_config_key(path, "authtoken", value)
    stdout.write(f"Authtoken saved to configuration file: {path}\n")
    return 0


# The agent


def select_tunnels(
    command: str, options: usage.Options, config: AgentConfig
) -> list[TunnelDefinition]:
    """
    The tunnels a command starts: the one its arguments describe, or those
    named from the config files.

    @raise CommandFailed: for unknown names (C{TK_TUNNEL_UNDEFINED}) or
        C{--all} with none defined (C{TK_NO_TUNNELS_DEFINED}), in ngrok's
        words.
    """
    if command == "tcp":
        try:
            addr = parse_upstream_address(options["addr"], default_scheme="tcp")
            remote = options["remote-addr"]
            remote_addr = parse_host_port(remote) if remote else None
        except ValueError as error:
            raise CommandFailed(f"ERROR: {error}\n", 2)
        if addr.scheme != "tcp":
            raise CommandFailed(
                f"ERROR: {options['addr']!r} is not a TCP address; write PORT or"
                " HOST:PORT.\n",
                2,
            )
        return [
            TunnelDefinition(
                name=COMMAND_LINE_TUNNEL,
                proto="tcp",
                addr=addr,
                remote_addr=remote_addr,
                metadata=options["metadata"],
            )
        ]
    if command == "http":
        return [
            TunnelDefinition(
                name=COMMAND_LINE_TUNNEL,
                proto="http",
                addr=options["upstream"],
                metadata=options["metadata"],
                inspect=options["inspect"],
                subdomain=options["subdomain"],
                hostname=options["hostname"],
                basic_auth=options["credentials"],
                schemes=options["schemes"],
                host_header=options["host-header"],
            )
        ]
    if command == "tls":
        return [
            TunnelDefinition(
                name=COMMAND_LINE_TUNNEL,
                proto="tls",
                addr=options["upstream"],
                metadata=options["metadata"],
                subdomain=options["subdomain"],
                hostname=options["hostname"],
                crt=options["crt"],
                key=options["key"],
                mutual_tls_cas=options["mutual-tls-cas"],
            )
        ]
    if command == "tunnel":
        return [
            TunnelDefinition(
                name=COMMAND_LINE_TUNNEL,
                proto=None,
                addr=options["upstream"],
                metadata=options["metadata"],
                inspect=options["inspect"],
                labels=options["labels"],
                crt=options["crt"],
                key=options["key"],
            )
        ]
    if options["none"]:
        return []
    if options["all"]:
        if not config.tunnels:
            raise CommandFailed(
                "ERROR: TK_NO_TUNNELS_DEFINED: Your configuration file must define"
                " at least one tunnel when using --all. To intentionally start no"
                " tunnels, use `tunnelkit start --none.`\n"
            )
        return list(config.tunnels.values())
    unknown = [name for name in options["names"] if name not in config.tunnels]
    if unknown:
        available = ", ".join(config.tunnels) or "(none)"
        read = ", ".join(config.paths) or "(none)"
        raise CommandFailed(
            f"ERROR: TK_TUNNEL_UNDEFINED: Tunnel '{unknown[0]}' is not defined"
            " in the config files.\n"
            f"ERROR: Tunnels available: {available}\n"
            f"ERROR: Config files read: [{read}]\n"
        )
    return [config.tunnels[name] for name in options["names"]]


def authtoken_for(options: usage.Options, config: AgentConfig) -> str:
    """
    @return: the authtoken to use: C{--authtoken}, else C{TUNNELKIT_AUTHTOKEN}
        from the environment, else the config's, else none.
    """
    return (
        options["authtoken"]
        or os.environ.get("TUNNELKIT_AUTHTOKEN")
        or config.authtoken
        or ""
    )


def _run_agent(
    command: str,
    options: usage.Options,
    stdout: IO[str],
    stderr: IO[str],
    reactor: Any,
) -> int:
    from tunnelkit.agent.app import AgentApplication
    from tunnelkit.agent.console import console_wanted
    from tunnelkit.agent.terminal import console_screen, is_terminal

    config = load_agent_config(options["configs"])
    tunnels = select_tunnels(command, options, config)
    console = console_wanted(
        config.console_ui,
        options["log"] or config.log,
        is_terminal(stdout),
        is_terminal(stderr),
    )
    install_logs(
        options,
        config.log,
        config.log_format,
        config.log_level,
        stderr,
        warnings_to_stderr=not console,
    )
    if reactor is None:
        from twisted.internet import reactor

    status = {"code": 0}

    def stopped(outcome: Any) -> None:
        leave_screen()
        if isinstance(outcome, TunnelkitError) and not status["code"]:
            stderr.write(f"ERROR: {outcome}\n")
            status["code"] = 1
        stop_reactor(reactor)

    app = AgentApplication(
        config, tunnels, reactor, authtoken_for(options, config), on_stopped=stopped
    )
    screen = None
    if console:
        screen = console_screen(app, reactor, stdout, config.console_ui_color)

    def leave_screen() -> None:
        if screen is not None:
            screen.restore()

    def ready(agent: Any) -> None:
        if screen is None:
            write_summary(stdout, app)
        else:
            screen.redraw_soon()

    def failed(failure: Failure) -> None:
        leave_screen()
        if not status["code"]:
            stderr.write(f"ERROR: {failure.value}\n")
            status["code"] = 1
        stop_reactor(reactor)

    app.ready.addCallbacks(ready, failed)
    if screen is not None:
        reactor.callWhenRunning(screen.startService)
        reactor.addSystemEventTrigger("before", "shutdown", screen.stopService)
    reactor.callWhenRunning(app.startService)
    reactor.addSystemEventTrigger("before", "shutdown", app.stopService)
    try:
        reactor.run()
    finally:
        leave_screen()
    return status["code"]


def write_summary(stdout: IO[str], app: Any) -> None:
    """
    Print the startup summary: session status, version, edge, the web
    interface's URL when it runs, and one Forwarding line per public URL of
    each tunnel.
    """
    agent = app.agent
    edge = str(agent.edge)
    if app.edge is not None:
        edge += " (embedded)"
    lines = [
        f"{'tunnelkit':<62}(Ctrl+C to quit)",
        "",
        f"{'Session Status':<30}online",
        f"{'Version':<30}{__version__}",
        f"{'Edge':<30}{edge}",
    ]
    if app.web_url is not None:
        lines.append(f"{'Web Interface':<30}{app.web_url}")
    for tunnel in agent.tunnels.values():
        if tunnel.labels:
            lines.append(
                f"{'Forwarding':<30}labels {tunnel.labels} -> {tunnel.forwards_to}"
            )
            continue
        for url in tunnel.public_urls or (None,):
            lines.append(f"{'Forwarding':<30}{url} -> {tunnel.forwards_to}")
    if not agent.tunnels:
        lines.append(f"{'Forwarding':<30}(no tunnels started)")
    stdout.write("\n".join(lines) + "\n")
    stdout.flush()


# The edge


def _run_edge(
    options: usage.Options, stdout: IO[str], stderr: IO[str], reactor: Any
) -> int:
    from tunnelkit.edge.labeled import reload_on_sighup
    from tunnelkit.edge.server import EdgeServer

    config = load_edge_config(options["config"])
    install_logs(options, config.log, config.log_format, config.log_level, stderr)
    if reactor is None:
        from twisted.internet import reactor

    status = {"code": 0}
    edge = EdgeServer(config, reactor)
    reload_on_sighup(edge)

    def listening(port: Any) -> None:
        address = port.getHost()
        stdout.write(
            f"tunnelkit edge listening for agents on {address.host}:{address.port}\n"
        )
        for scheme, listener in edge.http_ports.items():
            public = format_address(listener.getHost())
            stdout.write(f"tunnelkit edge serving {scheme} on {public}\n")
        if edge.ca_path is not None:
            stdout.write(
                f"Agents must trust the edge's CA: root_cas: {edge.ca_path.path}\n"
            )
        stdout.flush()

    def failed(failure: Failure) -> None:
        stderr.write(f"ERROR: {failure.value}\n")
        status["code"] = 1
        stop_reactor(reactor)

    def start() -> None:
        edge.start().addCallbacks(listening, failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", edge.stopService)
    reactor.run()
    return status["code"]

"""
The command-line options of the agent and the edge, defined once and used
by both the C{tunnelkit} command and the twistd plugins, so that a flag
means the same everywhere. Flags follow the ngrok agent's names.
"""

import os
import sys
from typing import Any, Callable, TypeVar

from twisted.python import usage

from tunnelkit import __version__
from tunnelkit.config import (
    DEFAULT_SCHEMES,
    SCHEMES_BY_BIND_TLS,
    BasicAuthCredential,
    UpstreamAddress,
    parse_credential,
    parse_host_header,
    parse_hostname,
    parse_subdomain,
    parse_upstream_address,
)
from tunnelkit.config._values import LOG_FORMATS, LOG_LEVELS
from tunnelkit.runtime import show_fields_in_twistd_log

_T = TypeVar("_T")


def check_log_flags(options: usage.Options) -> None:
    """
    Reject a C{--log-level} or C{--log-format} that is not one of ngrok's.

    @raise usage.UsageError: starting with C{TK_LOG_LEVEL} or
        C{TK_LOG_FORMAT}, naming the flag and the allowed values.
    """
    level = options["log-level"]
    if level is not None and level not in LOG_LEVELS:
        raise usage.UsageError(
            f"TK_LOG_LEVEL: --log-level must be one of {', '.join(LOG_LEVELS)},"
            f" not {level!r}"
        )
    log_format = options["log-format"]
    if log_format is not None and log_format not in LOG_FORMATS:
        raise usage.UsageError(
            f"TK_LOG_FORMAT: --log-format must be one of {', '.join(LOG_FORMATS)},"
            f" not {log_format!r}"
        )


class _Command(usage.Options):
    """
    Options of a command whose help starts with its own synopsis, which
    names the whole command; Twisted would put the parent's in front. Its
    help ends with its own C{longdesc} or nothing, never the docstring of
    the C{__main__} module, and C{--version} prints tunnelkit's version,
    not Twisted's.
    """

    synopsis = ""
    longdesc = ""

    def getSynopsis(self) -> str:
        return self.synopsis

    def opt_version(self) -> None:
        """print the tunnelkit version and exit"""
        sys.stdout.write(f"tunnelkit version {__version__}\n")
        raise SystemExit(0)


class _FlagsAnywhere(_Command):
    """
    Options whose flags may come after the positional arguments, as in
    C{tunnelkit tcp 22 --remote-addr HOST:PORT}; Twisted's parser alone stops
    at the first argument that is not a flag.
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        valued = {"--" + name[:-1] for name in self.longOpt if name.endswith("=")}
        valued.update(
            "-" + letter
            for letter, following in zip(self.shortOpt, self.shortOpt[1:] + " ")
            if following == ":" and letter != ":"
        )
        flags: list[str] = []
        arguments: list[str] = []
        index = 0
        while index < len(options):
            argument = options[index]
            if argument == "--":
                arguments.extend(options[index + 1 :])
                break
            if argument.startswith("-") and argument != "-":
                flags.append(argument)
                if argument in valued:
                    if index + 1 == len(options):
                        raise usage.UsageError(f"{argument} needs a value")
                    index += 1
                    flags.append(options[index])
            else:
                arguments.append(argument)
            index += 1
        super().parseOptions(flags + ["--"] + arguments)


class ConfigFileOptions(_FlagsAnywhere):
    """
    The C{--config} flag: repeatable, or a comma separated list, merged in
    order. The C{tunnelkit config} subcommands take only this one.
    """

    def __init__(self) -> None:
        super().__init__()
        self["configs"] = []

    def opt_config(self, paths: str) -> None:
        """a config file; repeat it, or separate paths with commas; later ones win"""
        self["configs"].extend(path for path in paths.split(",") if path)


class CommonOptions(ConfigFileOptions):
    """
    Flags every agent command takes: C{--config}, C{--authtoken} and the log
    flags.
    """

    optParameters: list[list[Any]] = [
        ["authtoken", None, None, "the authtoken to connect with"],
        ["log", None, None, "where to log: stdout, stderr, false or a file path"],
        ["log-format", None, None, "log format: term, logfmt or json"],
        ["log-level", None, None, "log level: crit, warn, error, info or debug"],
    ]

    def postOptions(self) -> None:
        check_log_flags(self)


class TcpOptions(CommonOptions):
    """
    C{tunnelkit tcp PORT|HOST:PORT}: forward a public TCP address to a
    local TCP service.
    """

    synopsis = "tunnelkit tcp [options] PORT|HOST:PORT"
    optParameters = [
        ["remote-addr", None, None, "bind this reserved address (host:port)"],
        ["metadata", None, None, "free text attached to the tunnel"],
    ]

    def parseArgs(self, addr: str) -> None:  # type: ignore[override]
        self["addr"] = addr


class HttpOptions(CommonOptions):
    """
    C{tunnelkit http PORT|HOST:PORT|URL}: serve a local web service, or a
    directory with the built-in file server, at a public HTTP address.

    After parsing, C{upstream} holds the parsed address, C{credentials} the
    basic authentication users, C{schemes} the public schemes, C{hostname}
    the host name asked for (from C{--hostname} or C{--domain}) and
    C{inspect} a boolean.
    """

    synopsis = "tunnelkit http [options] PORT|HOST:PORT|URL"
    longdesc = (
        "PORT or HOST:PORT forwards to http://HOST:PORT (localhost by default);"
        " https://HOST:PORT uses TLS to the upstream without verifying its"
        " certificate; file:///ABSOLUTE/PATH serves that directory or file."
        " A basic auth password must have 8 characters or more."
    )
    optParameters = [
        [
            "host-header",
            None,
            "preserve",
            "the Host the upstream sees: preserve (the public one), rewrite (the"
            " upstream's host) or a literal value",
        ],
        ["subdomain", None, None, "ask for this name under the edge's domain"],
        ["hostname", None, None, "ask for this full host name"],
        ["domain", None, None, "the same as --hostname (ngrok v3's name for it)"],
        [
            "bind-tls",
            None,
            None,
            "ngrok v2's choice of schemes: true (https only), false (http only)"
            " or both",
        ],
        ["inspect", None, "true", "capture requests for inspection: true or false"],
        ["metadata", None, None, "free text attached to the tunnel"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["basic-auth"] = []
        self["scheme"] = []

    def opt_basic_auth(self, credential: str) -> None:
        """user:password a request must carry; repeat it for more users"""
        self["basic-auth"].append(credential)

    def opt_auth(self, credential: str) -> None:
        """the same as --basic-auth (ngrok v2's name for it)"""
        self.opt_basic_auth(credential)

    def opt_scheme(self, scheme: str) -> None:
        """a public scheme, http or https; repeat it for both (default: both)"""
        self["scheme"].append(scheme)

    def parseArgs(self, addr: str) -> None:  # type: ignore[override]
        self["addr"] = addr

    def postOptions(self) -> None:
        super().postOptions()
        self["upstream"] = self._upstream()
        self["credentials"] = self._credentials()
        self["schemes"] = self._schemes()
        self["hostname"] = self._hostname()
        self["inspect"] = _boolean("--inspect", self["inspect"])
        if self["subdomain"] is not None:
            self["subdomain"] = _checked(
                "--subdomain", parse_subdomain, self["subdomain"]
            )
        try:
            parse_host_header(self["host-header"])
        except ValueError as error:
            raise usage.UsageError(f"--host-header: {error}")

    def _upstream(self) -> UpstreamAddress:
        try:
            upstream = parse_upstream_address(self["addr"], default_scheme="http")
        except ValueError as error:
            raise usage.UsageError(
                f"{error}; give a port, host:port, or an http://, https:// or"
                " file:/// URL"
            )
        if upstream.scheme == "file" and not os.path.exists(upstream.path):
            raise usage.UsageError(
                f"{upstream.path} does not exist; give the absolute path of a"
                " directory or file to serve"
            )
        return upstream

    def _credentials(self) -> tuple[BasicAuthCredential, ...]:
        credentials = []
        for text in self["basic-auth"]:
            credentials.append(_checked("--basic-auth", parse_credential, text))
        return tuple(credentials)

    def _schemes(self) -> tuple[str, ...]:
        bind_tls, schemes = self["bind-tls"], self["scheme"]
        if bind_tls is not None and schemes:
            raise usage.UsageError(
                "--bind-tls and --scheme choose the same thing; give one of them"
            )
        if bind_tls is not None:
            if bind_tls not in SCHEMES_BY_BIND_TLS:
                raise usage.UsageError(
                    f"--bind-tls must be true, false or both, not {bind_tls!r}"
                )
            return SCHEMES_BY_BIND_TLS[bind_tls]
        for scheme in schemes:
            if scheme not in ("http", "https"):
                raise usage.UsageError(
                    f"--scheme must be http or https, not {scheme!r}"
                )
        return tuple(s for s in DEFAULT_SCHEMES if s in schemes) or DEFAULT_SCHEMES

    def _hostname(self) -> str | None:
        return _requested_hostname(self)


class TlsOptions(CommonOptions):
    """
    C{tunnelkit tls PORT|HOST:PORT}: give a local TLS service a public name
    on the edge's HTTPS port, whose connections pass through untouched; or,
    with C{--crt} and C{--key}, end TLS at the agent and forward plaintext.

    After parsing, C{upstream} holds the parsed address, C{hostname} the
    host name asked for (from C{--hostname} or C{--domain}), and C{crt},
    C{key} and C{mutual-tls-cas} absolute paths or C{None}.
    """

    synopsis = "tunnelkit tls [options] PORT|HOST:PORT"
    longdesc = (
        "The edge reads the server name (SNI) of each TLS connection to its"
        " HTTPS port and passes the connections for this tunnel's name to"
        " PORT (on localhost by default) untouched: the local service"
        " presents its own certificate. With --crt and --key the agent ends"
        " TLS itself and forwards plaintext; add --mutual-tls-cas to require"
        " client certificates signed by those CAs."
    )
    optParameters = [
        ["subdomain", None, None, "ask for this name under the edge's domain"],
        ["hostname", None, None, "ask for this full host name"],
        ["domain", None, None, "the same as --hostname (ngrok v3's name for it)"],
        ["crt", None, None, "a PEM certificate: end TLS at the agent with it"],
        ["key", None, None, "the unencrypted PEM private key of --crt"],
        [
            "mutual-tls-cas",
            None,
            None,
            "a PEM file of CAs: with --crt, clients must present a certificate"
            " one of them signed",
        ],
        ["client-cas", None, None, "the same as --mutual-tls-cas (ngrok v2's name)"],
        [
            "terminate-at",
            None,
            None,
            "where TLS ends: upstream (the default: passed through) or agent"
            " (with --crt and --key)",
        ],
        ["metadata", None, None, "free text attached to the tunnel"],
    ]

    def parseArgs(self, addr: str) -> None:  # type: ignore[override]
        self["addr"] = addr

    def postOptions(self) -> None:
        super().postOptions()
        try:
            upstream = parse_upstream_address(self["addr"], default_scheme="tcp")
        except ValueError as error:
            raise usage.UsageError(f"{error}; give a port or host:port")
        if upstream.scheme != "tcp":
            raise usage.UsageError(
                f"{self['addr']!r} is not a TCP address; a tls tunnel forwards"
                " the TLS bytes as they are: give a port or host:port"
            )
        self["upstream"] = upstream
        self["hostname"] = _requested_hostname(self)
        if self["subdomain"] is not None:
            self["subdomain"] = _checked(
                "--subdomain", parse_subdomain, self["subdomain"]
            )
        self["crt"] = _existing_file("--crt", self["crt"])
        self["key"] = _existing_file("--key", self["key"])
        self["mutual-tls-cas"] = self._mutual_tls_cas()
        self._check_termination()

    def _mutual_tls_cas(self) -> str | None:
        cas, alias = self["mutual-tls-cas"], self["client-cas"]
        if cas is not None and alias is not None:
            raise usage.UsageError(
                "--client-cas is another name for --mutual-tls-cas; give one"
            )
        flag = "--client-cas" if alias is not None else "--mutual-tls-cas"
        return _existing_file(flag, cas if cas is not None else alias)

    def _check_termination(self) -> None:
        crt, key, where = self["crt"], self["key"], self["terminate-at"]
        if (crt is None) != (key is None):
            raise usage.UsageError("--crt and --key must be given together")
        if where not in (None, "agent", "upstream", "edge"):
            raise usage.UsageError(
                f"--terminate-at must be agent or upstream, not {where!r}"
            )
        if where == "edge":
            raise usage.UsageError(
                "the edge does not end TLS for tls tunnels; use --terminate-at"
                " agent with --crt and --key, or pass TLS through to the"
                " upstream (the default)"
            )
        if where == "agent" and crt is None:
            raise usage.UsageError("--terminate-at agent needs --crt and --key")
        if where == "upstream" and crt is not None:
            raise usage.UsageError(
                "--crt and --key end TLS at the agent; leave them out to pass"
                " TLS through to the upstream"
            )
        if self["mutual-tls-cas"] is not None and crt is None:
            raise usage.UsageError(
                "--mutual-tls-cas needs --crt and --key: client certificates"
                " are checked where TLS ends, at the agent"
            )


def _requested_hostname(options: usage.Options) -> str | None:
    """
    @return: the host name asked for with C{--hostname} or C{--domain},
        checked, or C{None}.
    @raise usage.UsageError: for both flags, either with C{--subdomain}, or
        a name that is not a host name.
    """
    hostname, domain = options["hostname"], options["domain"]
    if hostname is not None and domain is not None:
        raise usage.UsageError(
            "--domain is another name for --hostname; give one of them"
        )
    flag = "--domain" if domain is not None else "--hostname"
    name = domain if domain is not None else hostname
    if name is None:
        return None
    if options["subdomain"] is not None:
        raise usage.UsageError(f"give either --subdomain or {flag}, not both")
    return _checked(flag, parse_hostname, name)


def _existing_file(flag: str, path: str | None) -> str | None:
    """
    @return: the absolute path of C{path} (C{~} expanded), or C{None}.
    @raise usage.UsageError: naming the flag, when it is not a file.
    """
    if path is None:
        return None
    absolute = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(absolute):
        raise usage.UsageError(f"{flag}: {path} does not exist or is not a file")
    return absolute


def _boolean(flag: str, text: str) -> bool:
    """
    @return: the value of a flag written C{true} or C{false}.
    @raise usage.UsageError: naming the flag, for any other word.
    """
    if text not in ("true", "false"):
        raise usage.UsageError(f"{flag} must be true or false, not {text!r}")
    return text == "true"


def _checked(flag: str, parse: Callable[[str], _T], text: str) -> _T:
    """
    @return: C{parse(text)}.
    @raise usage.UsageError: naming the flag, when C{parse} raises
        C{ValueError}.
    """
    try:
        return parse(text)
    except ValueError as error:
        raise usage.UsageError(f"{flag}: {error}")


class StartOptions(CommonOptions):
    """
    C{tunnelkit start NAME…}: start tunnels defined in the config files.
    """

    synopsis = "tunnelkit start [options] NAME... | --all | --none"
    optFlags = [
        ["all", None, "start every tunnel in the config files"],
        ["none", None, "start no tunnel, only the agent"],
    ]

    def parseArgs(self, *names: str) -> None:
        self["names"] = list(names)

    def postOptions(self) -> None:
        super().postOptions()
        if self["all"] and self["none"]:
            raise usage.UsageError("--all and --none cannot be used together")
        if (self["all"] or self["none"]) and self["names"]:
            raise usage.UsageError("name tunnels or use --all/--none, not both")
        if not (self["all"] or self["none"] or self["names"]):
            raise usage.UsageError("name the tunnels to start, or use --all or --none")


class AgentServiceOptions(StartOptions):
    """
    C{twistd -n tunnel}: the agent as a service; starts every tunnel in the
    config (C{--all}) unless tunnels are named.
    """

    synopsis = "twistd -n tunnel [options] [NAME...]"

    def postOptions(self) -> None:
        if not (self["none"] or self["names"]):
            self["all"] = True
        super().postOptions()
        show_fields_in_twistd_log(self)


class TunnelOptions(CommonOptions):
    """
    C{tunnelkit tunnel --label NAME=VALUE ADDR}: a labeled tunnel, which
    takes the connections of the edge routes whose backends ask for exactly
    its labels; its protocol and public address come from those edges.

    After parsing, C{labels} holds the labels as C{(name, value)} pairs in
    the order given, C{upstream} the parsed address and C{inspect} a
    boolean.
    """

    synopsis = "tunnelkit tunnel --label NAME=VALUE [--label ...] [options] ADDR"
    longdesc = (
        "ADDR is a port, HOST:PORT, an http:// or https:// URL, or a file:///"
        " path to serve. The edge's"
        " operator defines, in edge.yml, which edges send traffic to which"
        " labels; every edge also asks for the label edge=EDGE_ID. With --crt"
        " and --key, the agent ends the TLS of connections from TLS edges and"
        " forwards plaintext."
    )
    optParameters = [
        ["inspect", None, "true", "capture requests for inspection: true or false"],
        ["metadata", None, None, "free text attached to the tunnel"],
        [
            "crt",
            None,
            None,
            "a PEM certificate: end the TLS of TLS edges' connections with it",
        ],
        ["key", None, None, "the unencrypted PEM private key of --crt"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["label"] = []

    def opt_label(self, label: str) -> None:
        """a label NAME=VALUE; repeat it for more labels (at least one)"""
        self["label"].append(label)

    def parseArgs(self, addr: str) -> None:  # type: ignore[override]
        self["addr"] = addr

    def postOptions(self) -> None:
        super().postOptions()
        labels: dict[str, str] = {}
        for text in self["label"]:
            name, equals, value = text.partition("=")
            if not equals or not name:
                raise usage.UsageError(f"--label {text!r}: write NAME=VALUE")
            if name in labels:
                raise usage.UsageError(f"--label: {name!r} is given twice")
            labels[name] = value
        if not labels:
            raise usage.UsageError("give at least one --label NAME=VALUE")
        self["labels"] = tuple(labels.items())
        self["inspect"] = _boolean("--inspect", self["inspect"])
        self["crt"] = _existing_file("--crt", self["crt"])
        self["key"] = _existing_file("--key", self["key"])
        if (self["crt"] is None) != (self["key"] is None):
            raise usage.UsageError("--crt and --key must be given together")
        try:
            self["upstream"] = parse_upstream_address(self["addr"], "http")
        except ValueError as error:
            raise usage.UsageError(
                f"{error}; give a port, host:port, or an http://, https:// or"
                " file:/// URL"
            )


class _ConfigKeyOptions(ConfigFileOptions):
    """
    A C{tunnelkit config} subcommand that sets one key.
    """

    key = ""

    def parseArgs(self, value: str) -> None:  # type: ignore[override]
        self["value"] = value


class AddAuthtokenOptions(_ConfigKeyOptions):
    """
    C{tunnelkit config add-authtoken TOKEN}.
    """

    synopsis = "tunnelkit config add-authtoken [options] TOKEN"
    key = "authtoken"


class AddServerAddrOptions(_ConfigKeyOptions):
    """
    C{tunnelkit config add-server-addr HOST:PORT}.
    """

    synopsis = "tunnelkit config add-server-addr [options] HOST:PORT"
    key = "server_addr"


class CheckOptions(ConfigFileOptions):
    """
    C{tunnelkit config check}.
    """

    synopsis = "tunnelkit config check [options]"


class ConfigOptions(_Command):
    """
    C{tunnelkit config}: edit and check the agent's config file.
    """

    synopsis = "tunnelkit config add-authtoken|add-server-addr|check ..."
    subCommands = [
        ["add-authtoken", None, AddAuthtokenOptions, "save an authtoken"],
        ["add-server-addr", None, AddServerAddrOptions, "save the edge's address"],
        ["check", None, CheckOptions, "check the config files"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a config subcommand")


class EdgeOptions(_FlagsAnywhere):
    """
    C{tunnelkit edge} and C{twistd -n tunnel-edge}: the edge server.
    """

    synopsis = "tunnelkit edge --config edge.yml [options]"
    optParameters = [
        ["config", None, None, "the edge's config file (edge.yml)"],
        ["log", None, None, "where to log: stdout, stderr, false or a file path"],
        ["log-format", None, None, "log format: term, logfmt or json"],
        ["log-level", None, None, "log level: crit, warn, error, info or debug"],
    ]

    def postOptions(self) -> None:
        if self["config"] is None:
            raise usage.UsageError("--config edge.yml is required")
        check_log_flags(self)
        show_fields_in_twistd_log(self)


class VersionOptions(_Command):
    """
    C{tunnelkit version}.
    """

    synopsis = "tunnelkit version"


class TunnelkitOptions(usage.Options):
    """
    The C{tunnelkit} command.
    """

    synopsis = "tunnelkit COMMAND [options]"
    longdesc = (
        "Self-hosted secure tunnels. With no server_addr configured, the agent"
        " starts an edge inside its own process on loopback."
    )
    subCommands = [
        ["http", None, HttpOptions, "serve a local web service or directory over HTTP"],
        ["tcp", None, TcpOptions, "forward a public TCP address to a local port"],
        ["tls", None, TlsOptions, "pass a public TLS name through to a local port"],
        ["tunnel", None, TunnelOptions, "a labeled tunnel for the edges' routes"],
        ["start", None, StartOptions, "start tunnels by name from the config"],
        ["config", None, ConfigOptions, "edit and check the config file"],
        ["edge", None, EdgeOptions, "run the edge server in the foreground"],
        ["version", None, VersionOptions, "print the version"],
    ]

    def opt_version(self) -> None:
        """print the tunnelkit version and exit"""
        sys.stdout.write(f"tunnelkit version {__version__}\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a command")

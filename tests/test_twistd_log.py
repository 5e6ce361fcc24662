"""
Tests for the fields of tunnelkit's events in twistd's own log: the
L{tunnelkit.runtime} pieces, and C{twistd -n tunnel} run for real.
"""

import os
import re

from twisted.scripts.twistd import ServerOptions
from twisted.internet.defer import inlineCallbacks
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.e2e import (
    Steps,
    make_directory,
    start_program,
    twistd_argv,
    write_file,
)
from tests.test_e2e_api import wait_until
from tunnelkit.options import AgentServiceOptions, TunnelkitOptions
from tunnelkit.runtime import show_fields_in_twistd_log, with_fields


def event(
    fmt: str, namespace: str = "tunnelkit.agent.service", **fields: object
) -> dict[str, object]:
    """
    @return: an event as L{twisted.logger.Logger} makes it.
    """
    return {
        "log_format": fmt,
        "log_namespace": namespace,
        "log_level": LogLevel.info,
        **fields,
    }


class WithFieldsTests(SynchronousTestCase):
    """
    L{with_fields}: the text of an event ends with its fields.
    """

    def test_started_tunnel(self) -> None:
        """
        C{started tunnel} shows its name, address and URL, in order, as
        C{key=value} words; C{obj} is left out.
        """
        started = event(
            "started tunnel",
            obj="tunnels",
            name="web",
            addr="http://localhost:80",
            url="https://{x}.example",
        )

        text = formatEvent(with_fields(started))

        self.assertEqual(
            text,
            "started tunnel name=web addr=http://localhost:80 url=https://{x}.example",
        )
        self.assertEqual(started["log_format"], "started tunnel")

    def test_values_and_secrets(self) -> None:
        """
        Values with spaces and values that are not strings are JSON text;
        an authtoken is shortened; fields already in the text are not
        repeated.
        """
        shown = event(
            "connecting to edge {edge}",
            edge="e:4443",
            authtoken="secret-token",
            labels="a b",
            port=80,
        )

        text = formatEvent(with_fields(shown))

        self.assertEqual(
            text, 'connecting to edge e:4443 authtoken=secr… labels="a b" port=80'
        )

    def test_other_events_unchanged(self) -> None:
        """
        Events of other namespaces, and tunnelkit's without fields, are
        passed as they are.
        """
        twisted = event("Site starting on {port}", namespace="twisted.web", port=1)
        bare = event("tunnel session started", obj="tunnels.session")

        self.assertIs(with_fields(twisted), twisted)
        self.assertIs(with_fields(bare), bare)


class TakeOverTests(SynchronousTestCase):
    """
    L{show_fields_in_twistd_log}: only under twistd without C{--logger}.
    """

    def test_twistd(self) -> None:
        """
        Parsed by twistd with no C{--logger}, the agent's and the edge's
        options make twistd use tunnelkit's text logger.
        """
        for plugin in (["tunnel", "--config", "a.yml"], ["tunnel-edge"]):
            options = ServerOptions()
            if plugin[0] == "tunnel-edge":
                plugin = plugin + ["--config", "edge.yml"]

            options.parseOptions(["-n", *plugin])

            self.assertEqual(options["logger"].__name__, "twistd_text_logger", plugin)

    def test_logger_given(self) -> None:
        """
        A C{--logger} given to twistd is kept.
        """
        options = ServerOptions()

        options.parseOptions(
            ["-n", "--logger", "tunnelkit.logs.twistd_logger", "tunnel"]
        )

        self.assertEqual(options["logger"].__name__, "twistd_logger")

    def test_tunnelkit_command(self) -> None:
        """
        Under the C{tunnelkit} command there is no twistd log to change.
        """
        options = TunnelkitOptions()

        options.parseOptions(["start", "--none"])
        show_fields_in_twistd_log(options.subOptions)

        self.assertNotIn("logger", options)

    def test_no_parent(self) -> None:
        """
        Options parsed on their own are left alone.
        """
        options = AgentServiceOptions()

        options.parseOptions([])

        self.assertNotIn("logger", options)


class TwistdLogTests(TestCase):
    """
    C{twistd -n tunnel} with twistd's own log file.
    """

    @inlineCallbacks
    def test_started_tunnel_url(self) -> Steps[None]:
        """
        The C{started tunnel} line of twistd's log file names the tunnel and
        gives its public URL.
        """
        home = make_directory(self)
        config = write_file(
            os.path.join(home, "a.yml"),
            'version: "2"\nweb_addr: false\ntunnels:\n'
            "  ssh:\n    proto: tcp\n    addr: 22\n",
        )
        argv = twistd_argv(home, "tunnel", "--config", config, "--all")
        program = start_program(self, "twistd -n tunnel", argv, home=home)
        log = os.path.join(home, "twistd-tunnel.log")
        pattern = re.compile(
            r"\[tunnelkit\.agent\.service#info\] started tunnel name=ssh"
            r" addr=//localhost:22 url=tcp://127\.0\.0\.1:[0-9]+$",
            re.M,
        )

        def logged() -> bool:
            if not os.path.exists(log):
                return False
            with open(log, encoding="utf-8") as lines:
                return pattern.search(lines.read()) is not None

        yield wait_until(logged, f"started tunnel in {log}: {program.describe()}")

        self.assertTrue(logged())

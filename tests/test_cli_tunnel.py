"""
Tests for C{tunnelkit tunnel --label NAME=VALUE ADDR}: its flags, and the
labeled tunnel it starts.
"""

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.cli import COMMAND_LINE_TUNNEL, select_tunnels
from tunnelkit.config import AgentConfig, UpstreamAddress
from tunnelkit.options import TunnelOptions


def parsed(*argv: str) -> TunnelOptions:
    """
    @return: the options of C{tunnelkit tunnel ARGV}.
    """
    options = TunnelOptions()
    options.parseOptions(list(argv))
    return options


class TunnelOptionsTests(SynchronousTestCase):
    """
    The flags of C{tunnelkit tunnel}.
    """

    def test_labels_in_order(self) -> None:
        """
        Each C{--label} gives one label, in the order given, before or
        after the address.
        """
        options = parsed("--label", "app=web", "8000", "--label", "env=prod")

        self.assertEqual(
            (options["labels"], options["upstream"]),
            (
                (("app", "web"), ("env", "prod")),
                UpstreamAddress("http", "localhost", 8000),
            ),
        )

    def test_label_needed(self) -> None:
        """
        At least one label is needed.
        """
        error = self.assertRaises(usage.UsageError, parsed, "8000")

        self.assertIn("at least one --label", str(error))

    def test_bad_label(self) -> None:
        """
        A label without C{=}, or a name given twice, is refused.
        """
        errors = [
            str(self.assertRaises(usage.UsageError, parsed, "--label", "app", "80")),
            str(
                self.assertRaises(
                    usage.UsageError, parsed, "--label", "a=1", "--label", "a=2", "80"
                )
            ),
        ]

        self.assertIn("write NAME=VALUE", errors[0])
        self.assertIn("given twice", errors[1])

    def test_definition(self) -> None:
        """
        The command starts one labeled tunnel named C{command_line}: no
        protocol, its labels, its address and C{--inspect}.
        """
        options = parsed("--label", "app=web", "--inspect", "false", "8000")

        [definition] = select_tunnels("tunnel", options, AgentConfig())

        self.assertEqual(
            (
                definition.name,
                definition.labeled,
                definition.labels,
                definition.addr.port,
                definition.inspect,
            ),
            (COMMAND_LINE_TUNNEL, True, (("app", "web"),), 8000, False),
        )

    def test_certificate(self) -> None:
        """
        C{--crt} and C{--key} give the tunnel's definition their absolute
        paths, for ending the TLS of TLS edges' connections at the agent.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        crt, key = os.path.join(directory, "a.crt"), os.path.join(directory, "a.key")
        for path in (crt, key):
            with open(path, "w") as pem:
                pem.write("PEM")
        options = parsed("--label", "app=tls", "--crt", crt, "--key", key, "8443")

        [definition] = select_tunnels("tunnel", options, AgentConfig())

        self.assertEqual(
            (definition.crt, definition.key),
            (os.path.abspath(crt), os.path.abspath(key)),
        )

    def test_certificate_needs_key(self) -> None:
        """
        C{--crt} without C{--key}, or a file that is not there, is refused.
        """
        missing = os.path.abspath(self.mktemp())

        errors = [
            str(self.assertRaises(usage.UsageError, parsed, *argv))
            for argv in (
                ("--label", "a=1", "--crt", __file__, "80"),
                ("--label", "a=1", "--crt", missing, "--key", __file__, "80"),
            )
        ]

        self.assertIn("must be given together", errors[0])
        self.assertIn("does not exist", errors[1])

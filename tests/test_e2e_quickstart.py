"""
The README's first command, C{tunnelkit http "file://$PWD"}, run as written
with an empty home: no configuration, so an embedded edge, and a directory
served through the URL it prints, fetched with curl as a person would.
"""

import json
import os
import re
import shutil

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e import (
    TUNNELKIT,
    WAIT,
    Steps,
    bounded,
    child_environment,
    make_directory,
    start_program,
)

HTTP_FORWARDING_LINE = (
    r"^Forwarding\s+(http://([0-9a-f]+)\.localhost:([0-9]+)) -> (file://\S+)$"
)
"""The summary line of the embedded edge's URL for a file tunnel."""

WEB_INTERFACE_LINE = r"^Web Interface\s+(http://127\.0\.0\.1:[0-9]+)$"
"""The summary line of the web interface's URL."""


class HttpQuickStartTests(TestCase):
    """
    C{tunnelkit http "file://$PWD"} in a directory serves it at the
    C{http://NAME.localhost:PORT} URL it prints.
    """

    timeout = 60

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise SkipTest("needs curl: apt-get install -y curl")
        self.home = make_directory(self)
        self.served = make_directory(self)
        with open(os.path.join(self.served, "hello.txt"), "w") as hello:
            hello.write("hello through the tunnel\n")

    @inlineCallbacks
    def curl(self, *arguments: str) -> Steps[tuple[bytes, int]]:
        """
        Run curl, at most L{WAIT} seconds.

        @return: a Deferred firing with its output and exit status.
        """
        running = getProcessOutputAndValue(
            "curl",
            ["--silent", "--show-error", "--max-time", str(int(WAIT)), *arguments],
            env=child_environment(self.home),
            reactor=reactor,
        )
        out, err, code = yield bounded(running, WAIT + 5, "curl")
        return out, code

    @inlineCallbacks
    def test_serves_current_directory(self) -> Steps[None]:
        """
        The summary prints an C{http://NAME.localhost:PORT} URL for the
        directory the command runs in; curl, which resolves C{*.localhost}
        to loopback itself, gets the listing and a file through it.
        """
        argv = TUNNELKIT + ["http", f"file://{self.served}"]
        program = start_program(
            self, "tunnelkit http", argv, home=self.home, cwd=self.served
        )
        forwarding = yield program.wait_for_line(HTTP_FORWARDING_LINE, stream="out")
        url, _, _, target = forwarding.groups()

        listing, listing_code = yield self.curl(url + "/")
        body, body_code = yield self.curl(url + "/hello.txt")

        self.assertEqual(target, f"file://{self.served}")
        self.assertEqual((listing_code, body_code), (0, 0), program.describe())
        self.assertTrue(re.search(rb'href="[^"]*hello\.txt"', listing), listing)
        self.assertEqual(body, b"hello through the tunnel\n")

    @inlineCallbacks
    def test_prints_web_interface(self) -> Steps[None]:
        """
        The summary has a C{Web Interface} line, as ngrok's console, with the
        URL the web interface took (4040, or a later port when another
        agent holds it): the API there lists the tunnel the summary shows.
        """
        argv = TUNNELKIT + ["http", f"file://{self.served}"]
        program = start_program(
            self, "tunnelkit http", argv, home=self.home, cwd=self.served
        )
        web = yield program.wait_for_line(WEB_INTERFACE_LINE, stream="out")
        forwarding = yield program.wait_for_line(HTTP_FORWARDING_LINE, stream="out")

        listed, code = yield self.curl(web.group(1) + "/api/tunnels")

        self.assertEqual(code, 0, program.describe())
        urls = [tunnel["public_url"] for tunnel in json.loads(listed)["tunnels"]]
        self.assertIn(forwarding.group(1), urls)

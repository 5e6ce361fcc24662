"""
Tests of third-party backends as Twisted plugins, with the example package
in C{examples/canary-backend}: installed with pip into a directory of the
test's own, found by C{getPlugins}, named in C{edge.yml} by its type, and
routing requests between labeled tunnels of a real edge.

The directory is put on C{sys.path} and on C{twisted.plugins.__path__} for
the test only; both are put back, and the package's modules forgotten, in
the clean-up.
"""

import os
import shutil
import subprocess
import sys
from typing import Any

import twisted.plugins
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from tests.e2e import (
    LOOPBACK,
    REPOSITORY,
    TOKEN,
    Steps,
    make_directory,
    start_agent,
    write_agent_config,
    write_file,
)
from tests.webclients import Curl
from tests.webservers import RecordingUpstream, listen_recording
from tests.webtunnels import DOMAIN
from tunnelkit.config import ConfigError, load_edge_config
from tunnelkit.edge.backends import backend_factories
from tunnelkit.edge.server import EdgeServer
from tunnelkit.interfaces import IBackend, IBackendFactory

EXAMPLE = os.path.join(REPOSITORY, "examples", "canary-backend")
MODULES = ("canary_backend", "twisted.plugins.tunnelkit_canary")

EDGE_YML = """\
version: 1
agent_listener: "tcp:0:interface=127.0.0.1"
https_listener: "tcp:0:interface=127.0.0.1"
domain: {domain}
state_dir: {state}
authtokens:
  - name: alice
    token: {token}
    labels: ["app=web", "track=*"]
edges:
  web:
    type: https
    hostports: [app.{domain}]
    backend:
      type: canary
      header: X-Canary
      value: "yes"
      canary: {{type: tunnel_group, labels: {{app: web, track: canary}}}}
      stable: {{type: tunnel_group, labels: {{app: web, track: stable}}}}
"""


def install_example(test: TestCase, directory: str) -> str:
    """
    Install the example package, without its dependencies, into a
    directory of the test's, from a copy of its source (so the build leaves
    nothing in the working tree), and make its plugins findable until the
    test's clean-up.

    @return: the directory it was installed into.
    @raise SkipTest: when pip cannot build it: the build uses the installed
        setuptools and wheel (the C{test} extra), so nothing is downloaded.
    """
    source = os.path.join(directory, "canary-source")
    shutil.copytree(EXAMPLE, source)
    target = os.path.join(directory, "site")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        + ["--no-build-isolation", "--disable-pip-version-check"]
        + ["--target", target, source],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if installed.returncode != 0:
        raise SkipTest(f"pip could not install the example: {installed.stderr}")
    plugins = os.path.join(target, "twisted", "plugins")
    sys.path.insert(0, target)
    twisted.plugins.__path__.append(plugins)
    test.addCleanup(_forget, target, plugins)
    return target


def _forget(target: str, plugins: str) -> None:
    sys.path.remove(target)
    twisted.plugins.__path__.remove(plugins)
    for name in MODULES:
        sys.modules.pop(name, None)


class PluginDiscoveryTests(TestCase):
    """
    The installed example is found and checked like the built-in kinds.
    """

    timeout = 240

    @inlineCallbacks
    def setUp(self) -> Steps[None]:
        self.directory = make_directory(self)
        yield deferToThread(install_example, self, self.directory)

    def test_found(self) -> None:
        """
        C{getPlugins} finds the example's factory, which provides both
        L{IPlugin} and L{IBackendFactory}, and the edge knows its type.
        """
        [factory] = [p for p in getPlugins(IBackendFactory) if p.type == "canary"]

        self.assertTrue(verifyObject(IPlugin, factory))
        self.assertTrue(verifyObject(IBackendFactory, factory))
        self.assertIs(backend_factories()["canary"], factory)

    def test_backend_provides_interface(self) -> None:
        """
        The backend the example builds provides L{IBackend}.
        """
        from canary_backend import CanaryBackend

        backend = CanaryBackend("X-Canary", "1", object(), object())  # type: ignore

        self.assertTrue(verifyObject(IBackend, backend))

    def test_bad_option(self) -> None:
        """
        A bad option of the plugin's backend stops C{edge.yml} from loading,
        naming the edge and the option, at the option's line.
        """
        text = EDGE_YML.format(domain=DOMAIN, state="/nonexistent", token=TOKEN)
        path = write_file(
            os.path.join(self.directory, "edge.yml"),
            text.replace("value:", "colour:"),
        )

        error = self.assertRaises(ConfigError, load_edge_config, path)

        self.assertEqual(error.key, "edges.web.backend.colour")
        self.assertEqual(error.line, text.split("value:")[0].count("\n") + 1)
        self.assertIn("edge 'web'", error.message)
        self.assertIn("unknown option 'colour'", error.message)


class PluginRoutingTests(TestCase):
    """
    An edge configured with the example's backend routes by the header.
    """

    timeout = 240

    @inlineCallbacks
    def setUp(self) -> Steps[None]:
        self.directory = make_directory(self)
        yield deferToThread(install_example, self, self.directory)
        text = EDGE_YML.format(
            domain=DOMAIN, state=os.path.join(self.directory, "state"), token=TOKEN
        )
        config = load_edge_config(
            write_file(os.path.join(self.directory, "edge.yml"), text)
        )
        self.edge = EdgeServer(config, reactor)
        agent_port = yield self.edge.start()
        self.addCleanup(self.edge.stopService)
        self.server_addr = f"{LOOPBACK}:{agent_port.getHost().port}"
        assert self.edge.ca_path is not None
        self.ca_path = self.edge.ca_path.path
        self.https_port = self.edge.http_ports["https"].getHost().port

    @inlineCallbacks
    def start_track(self, track: str) -> Steps[RecordingUpstream]:
        """
        Start a local service and a labeled tunnel to it with the labels
        C{app=web} and C{track=TRACK}.

        @return: the service.
        """
        upstream = yield listen_recording(self)
        home = os.path.join(self.directory, track)
        os.makedirs(home)
        config = write_agent_config(
            home, self.server_addr, self.ca_path, TOKEN, name="agent.yml"
        )
        agent = start_agent(
            self,
            home,
            ["tunnel", "--label", "app=web", "--label", f"track={track}"]
            + [str(upstream.port), "--config", config],
        )
        yield agent.wait_for_event(msg="started tunnel")
        return upstream

    @inlineCallbacks
    def test_routes_by_header(self) -> Steps[None]:
        """
        Requests with the header go to the canary tunnel, the others to
        the stable one.
        """
        stable = yield self.start_track("stable")
        canary = yield self.start_track("canary")
        curl = Curl(self, self.directory, self.ca_path)
        url = f"https://app.{DOMAIN}:{self.https_port}"

        plain: Any = yield curl.fetch(url + "/plain")
        marked: Any = yield curl.fetch(url + "/marked", "-H", "X-Canary: yes")

        self.assertEqual((plain.status, marked.status), (200, 200))
        self.assertEqual(
            ([r.target for r in stable.received], [r.target for r in canary.received]),
            (["/plain"], ["/marked"]),
        )

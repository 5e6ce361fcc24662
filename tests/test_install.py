"""
The package as C{pip install .} builds it: every module and data file of
the source tree is installed, and the commands run from the install alone,
away from this tree.
"""

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import TestCase

import tunnelkit

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(tunnelkit.__file__)))
"""The tree the tests run from."""

PACKAGED = ("setup.py", "README.md", "tunnelkit", "twisted")
"""What the build reads from the tree."""

INSTALL_TIMEOUT = 300
"""Seconds pip has to build and install the package."""


GENERATED = ("__pycache__", "dropin.cache")
"""What Python and Twisted write into the tree as they run: bytecode, and the
cache of twistd plugins that C{getPlugins} leaves next to them."""


def _ignored(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name in GENERATED or name.endswith(".pyc")]


def _package_files(root: str) -> set[str]:
    """
    @return: the paths, relative to C{root}, of the files under its
        C{tunnelkit} and C{twisted/plugins} directories.
    """
    found = set()
    for top in ("tunnelkit", os.path.join("twisted", "plugins")):
        for directory, subdirectories, files in os.walk(os.path.join(root, top)):
            subdirectories[:] = [
                name for name in subdirectories if name != "__pycache__"
            ]
            for name in files:
                if name not in GENERATED and not name.endswith(".pyc"):
                    path = os.path.join(directory, name)
                    found.add(os.path.relpath(path, root))
    return found


class InstalledPackageTests(TestCase):
    """
    C{pip install .} of a copy of this tree, into a directory of the test's
    own, without build isolation so that nothing is downloaded.
    """

    timeout = INSTALL_TIMEOUT + 60

    def setUp(self) -> None:
        self.work = os.path.abspath(self.mktemp())
        source = os.path.join(self.work, "source")
        for name in PACKAGED:
            path = os.path.join(SOURCE, name)
            if os.path.isdir(path):
                shutil.copytree(path, os.path.join(source, name), ignore=_ignored)
            else:
                os.makedirs(source, exist_ok=True)
                shutil.copy(path, source)
        self.source = source
        self.target = os.path.join(self.work, "site")
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
            + ["--no-build-isolation", "--disable-pip-version-check"]
            + ["--target", self.target, source],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        self.assertEqual(installed.returncode, 0, installed.stderr)

    def run_installed(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """
        Run Python with only the install on its path, in a directory away
        from the tree.
        """
        environment = dict(os.environ, PYTHONPATH=self.target)
        return subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            cwd=self.work,
            env=environment,
            timeout=60,
        )

    def test_every_file_installed(self) -> None:
        """
        Every module, page, script and style sheet of the package, and the
        twistd plugins, are in the install.
        """
        missing = _package_files(self.source) - _package_files(self.target)

        self.assertEqual(sorted(missing), [])

    def test_commands_run(self) -> None:
        """
        The installed package runs each command's help, imports the agent
        and its web interface, and gives twistd both plugins and its
        reactor.
        """
        helps = [
            self.run_installed("-m", "tunnelkit", command, "--help")
            for command in ("http", "tcp", "tls", "tunnel", "edge")
        ]
        imported = self.run_installed(
            "-c",
            "import tunnelkit, tunnelkit.agent.app, tunnelkit.web.app;"
            " print(tunnelkit.__file__)",
        )
        twistd = self.run_installed("-m", "twisted", "--help")
        reactors = self.run_installed(
            "-c",
            "import sys; from twisted.scripts.twistd import run;"
            " sys.argv[1:] = ['--help-reactors']; run()",
        )

        self.assertEqual([run.returncode for run in helps], [0] * len(helps))
        self.assertEqual(imported.returncode, 0, imported.stderr)
        self.assertTrue(imported.stdout.startswith(self.target), imported.stdout)
        self.assertIn("tunnel-edge", twistd.stdout)
        self.assertIn("tunnel ", twistd.stdout)
        self.assertRegex(reactors.stdout, r"(?m)^\s+tunnelkit\s+epoll without")

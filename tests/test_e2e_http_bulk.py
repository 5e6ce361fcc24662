"""
End-to-end tests of flow control in HTTP tunnels: a gigabyte uploaded (with
a length, and chunked) and downloaded through a real edge and agent by
C{curl}, checked by SHA-256 at the far end, while the resident memory of
the edge and the agent is sampled to show neither holds the data.

The bytes come from L{tests.pattern}, generated as they are sent and hashed
as they arrive, so nothing is stored on disk.
"""

import json
import os
import shutil
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import SkipTest

from tests.e2e import WAIT, Program, Steps, start_program
from tests.webservers import BulkUpstream, listen_bulk
from tests.webtunnels import HttpTunnelTestCase, tunnel_urls

MIB = 1024 * 1024
BULK_SIZE = 1024 * MIB
BULK_SECONDS = 120.0
"""The deadline of one gigabyte transfer: generous for two busy CPUs."""

SLOW_SIZE = 256 * MIB
SLOW_RATE = 32 * MIB
"""A transfer paced by a slow end: four times L{MEMORY_GROWTH_LIMIT}, at a
rate that takes about 8 seconds."""

MEMORY_GROWTH_LIMIT = 64 * MIB
"""How much the resident memory of the edge or the agent may grow during a
transfer: a small part of what goes through."""

SAMPLE_INTERVAL = 0.05


def resident_memory(pid: int) -> int | None:
    """
    @return: the resident memory of a process in bytes (C{VmRSS} of
        C{/proc/PID/status}), or C{None} once it has ended.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemoryWatch:
    """
    The resident memory of some child processes, sampled every
    L{SAMPLE_INTERVAL} seconds from the moment it is made until it is
    stopped.

    @ivar baseline: each process's memory when the watch started.
    @ivar peak: the most each process's memory was seen at.
    """

    def __init__(self, programs: dict[str, Program]) -> None:
        if resident_memory(os.getpid()) is None:
            raise SkipTest("needs /proc/PID/status to read resident memory")
        self.pids = {name: program.transport.pid for name, program in programs.items()}
        self.baseline = {
            name: resident_memory(pid) or 0 for name, pid in self.pids.items()
        }
        self.peak = dict(self.baseline)
        self.samples = 0
        self._loop = LoopingCall(self.sample)
        self._loop.start(SAMPLE_INTERVAL)

    def sample(self) -> None:
        """
        Read each process's memory once.
        """
        self.samples += 1
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], resident_memory(pid) or 0)

    def stop(self) -> None:
        """
        Stop sampling (again is harmless).
        """
        if self._loop.running:
            self._loop.stop()

    def growth(self) -> dict[str, int]:
        """
        @return: how much each process's memory grew at its peak.
        """
        return {name: self.peak[name] - self.baseline[name] for name in self.pids}


class BulkTransferTests(HttpTunnelTestCase):
    """
    A gigabyte crosses an HTTP tunnel intact in each direction, paced by
    flow control rather than buffered by the edge or the agent.
    """

    timeout = int(BULK_SECONDS) + 60

    @inlineCallbacks
    def arrange(self) -> Steps[None]:
        self.upstream: BulkUpstream = yield listen_bulk(self)
        yield self.start_edge()
        self.agent = self.start_agent(str(self.upstream.port), "--subdomain", "bulk")
        yield tunnel_urls(self.agent)
        self.url = self.edge.url("http", "bulk.tunnels.test", "/upload")

    def watch_memory(self) -> MemoryWatch:
        """
        Start sampling the memory of the edge and the agent until the
        test's clean-up.
        """
        watch = MemoryWatch({"edge": self.edge.edge.program, "agent": self.agent})
        self.addCleanup(watch.stop)
        return watch

    def assertMemoryBounded(self, watch: MemoryWatch) -> None:
        """
        Assert neither the edge's nor the agent's memory grew by
        L{MEMORY_GROWTH_LIMIT} or more while C{watch} sampled it.
        """
        watch.stop()
        growth = watch.growth()
        self.assertTrue(watch.samples > 0)
        self.assertEqual(
            {name: grown < MEMORY_GROWTH_LIMIT for name, grown in growth.items()},
            {"edge": True, "agent": True},
            f"memory growth in MiB: { {n: g / MIB for n, g in growth.items()} }",
        )

    @inlineCallbacks
    def upload(
        self, headers: list[str], size: int = BULK_SIZE, url: str | None = None
    ) -> Steps[tuple[Program, str]]:
        """
        POST C{size} bytes of the pattern, piped from a generator process
        into C{curl -T -}.

        @param headers: the request headers curl is given, which choose
            the framing.
        @param url: where to, the tunnel's C{/upload} if not given.
        @return: a Deferred firing with curl's ended L{Program} and the
            SHA-256 of what the generator wrote.
        """
        read_end, write_end = os.pipe()
        generator = start_program(
            self,
            "pattern",
            [sys.executable, "-m", "tests.pattern", str(size)],
            home=self.directory,
            stdout=write_end,
        )
        options = [
            "-T",
            "-",
            "-X",
            "POST",
            "-H",
            "Expect:",
            "-w",
            "%{stderr}%{http_code}",
        ]
        for header in headers:
            options += ["-H", header]
        target = url or self.url
        curl = self.curl.start(options + [target], BULK_SECONDS, stdin=read_end)
        os.close(read_end)
        os.close(write_end)

        yield curl.wait_for_exit(BULK_SECONDS + WAIT)
        yield generator.wait_for_exit()
        return curl, generator.text("err").strip()

    @inlineCallbacks
    def test_upload_with_length(self) -> Steps[None]:
        """
        A 1 GiB body sent with C{Content-Length} reaches the upstream
        whole (same length and SHA-256 as generated), while neither the
        edge's nor the agent's memory grows by 64 MiB.
        """
        watch = self.watch_memory()

        curl, generated = yield self.upload(
            [f"Content-Length: {BULK_SIZE}", "Transfer-Encoding:"]
        )

        self.assertEqual(
            (curl.exit_code, curl.text("err")), (0, "200"), curl.describe()
        )
        self.assertEqual(
            json.loads(curl.text("out")), {"length": BULK_SIZE, "sha256": generated}
        )
        self.assertEqual([t.chunked for t in self.upstream.transfers], [False])
        self.assertMemoryBounded(watch)

    @inlineCallbacks
    def test_upload_chunked(self) -> Steps[None]:
        """
        A 1 GiB chunked body reaches the upstream whole and still chunked
        (same length and SHA-256 as generated), while neither the edge's
        nor the agent's memory grows by 64 MiB.
        """
        watch = self.watch_memory()

        curl, generated = yield self.upload(["Transfer-Encoding: chunked"])

        self.assertEqual(
            (curl.exit_code, curl.text("err")), (0, "200"), curl.describe()
        )
        self.assertEqual(
            json.loads(curl.text("out")), {"length": BULK_SIZE, "sha256": generated}
        )
        self.assertEqual([t.chunked for t in self.upstream.transfers], [True])
        self.assertMemoryBounded(watch)

    @inlineCallbacks
    def download(self, size: int, *options: str) -> Steps[tuple[Program, str]]:
        """
        GET C{size} bytes of the pattern with C{curl OPTIONS}, its output
        piped into C{sha256sum}.

        @return: a Deferred firing with curl's ended L{Program} and the
            SHA-256 of what it wrote.
        """
        sha256sum = shutil.which("sha256sum")
        if sha256sum is None:
            raise SkipTest("needs sha256sum: apt-get install -y coreutils")
        url = self.edge.url("http", "bulk.tunnels.test", f"/bytes/{size}")
        read_end, write_end = os.pipe()
        arguments = ["-w", "%{stderr}%{http_code} %{size_download}", *options, url]
        curl = self.curl.start(arguments, BULK_SECONDS, stdout=write_end)
        hasher = start_program(
            self, "sha256sum", [sha256sum], home=self.directory, stdin=read_end
        )
        os.close(read_end)
        os.close(write_end)

        yield curl.wait_for_exit(BULK_SECONDS + WAIT)
        yield hasher.wait_for_exit()
        return curl, hasher.text("out").split()[0]

    @inlineCallbacks
    def test_download(self) -> Steps[None]:
        """
        A 1 GiB response, piped from C{curl} into C{sha256sum}, arrives
        whole (same length and SHA-256 as the upstream sent), while neither
        the edge's nor the agent's memory grows by 64 MiB.
        """
        watch = self.watch_memory()

        curl, received = yield self.download(BULK_SIZE)

        [sent] = self.upstream.transfers
        self.assertEqual(
            (curl.exit_code, curl.text("err")), (0, f"200 {BULK_SIZE}"), curl.describe()
        )
        self.assertEqual((sent.length, sent.sha256), (BULK_SIZE, received))
        self.assertMemoryBounded(watch)

    @inlineCallbacks
    def test_slow_client(self) -> Steps[None]:
        """
        A 256 MiB response to a client that reads 32 MiB a second arrives
        whole, and neither the edge nor the agent takes in what the client
        has not read yet: their memory grows by less than 64 MiB while the
        upstream could send far faster.
        """
        watch = self.watch_memory()

        curl, received = yield self.download(SLOW_SIZE, "--limit-rate", str(SLOW_RATE))

        [sent] = self.upstream.transfers
        self.assertEqual(
            (curl.exit_code, curl.text("err")), (0, f"200 {SLOW_SIZE}"), curl.describe()
        )
        self.assertEqual((sent.length, sent.sha256), (SLOW_SIZE, received))
        self.assertMemoryBounded(watch)

    @inlineCallbacks
    def test_slow_upstream(self) -> Steps[None]:
        """
        A 256 MiB upload to an upstream that reads 32 MiB a second arrives
        whole, and neither the edge nor the agent takes in what the
        upstream has not read yet: their memory grows by less than 64 MiB
        while curl could send far faster.
        """
        url = self.edge.url("http", "bulk.tunnels.test", f"/upload?rate={SLOW_RATE}")
        watch = self.watch_memory()

        curl, generated = yield self.upload(
            [f"Content-Length: {SLOW_SIZE}", "Transfer-Encoding:"], SLOW_SIZE, url
        )

        self.assertEqual(
            (curl.exit_code, curl.text("err")), (0, "200"), curl.describe()
        )
        self.assertEqual(
            json.loads(curl.text("out")), {"length": SLOW_SIZE, "sha256": generated}
        )
        self.assertMemoryBounded(watch)

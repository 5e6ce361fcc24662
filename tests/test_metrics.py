"""
Tests for L{tunnelkit.agent.metrics}: moving rates that decay as the clock
moves, percentiles of known durations, samples of bounded size, and the
agent's totals fed by each tunnel.
"""

import math
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.agent.metrics import (
    NANOSECONDS,
    SAMPLE_SIZE,
    TICK_INTERVAL,
    DecayingSample,
    Meter,
    TunnelMetrics,
    percentiles,
)
from tunnelkit.agent.service import AgentService
from tunnelkit.agent.tunnel import Tunnel
from tunnelkit.agent.upstream import CountedConnection
from tunnelkit.config import AgentConfig, HostPort, TunnelDefinition, UpstreamAddress

WEB = TunnelDefinition(
    name="web", proto="http", addr=UpstreamAddress("http", "localhost", 8080)
)


def steady(clock: Clock, meter: Meter, per_second: int, seconds: int) -> None:
    """
    Mark C{per_second} events in each of C{seconds} seconds.
    """
    for _ in range(seconds):
        for _ in range(per_second):
            meter.mark()
        clock.advance(1)


class MeterTests(SynchronousTestCase):
    """
    L{Meter} counts events and averages their rate over 1, 5 and 15
    minutes, in ticks of five seconds.
    """

    def test_count(self) -> None:
        """
        The count is every event marked, at once.
        """
        clock = Clock()
        meter = Meter(clock)

        for _ in range(7):
            meter.mark()

        self.assertEqual(meter.count, 7)

    def test_no_rate_before_first_tick(self) -> None:
        """
        Events count in the rates only once their tick has ended.
        """
        clock = Clock()
        meter = Meter(clock)
        meter.mark()
        clock.advance(TICK_INTERVAL - 0.1)

        before = meter.rates()
        clock.advance(0.1)
        after = meter.rates()

        self.assertEqual(before, (0.0, 0.0, 0.0))
        self.assertTrue(all(rate > 0 for rate in after))

    def test_first_tick(self) -> None:
        """
        The first tick sets each rate to the tick's own rate.
        """
        clock = Clock()
        meter = Meter(clock)
        for _ in range(10):
            meter.mark()

        clock.advance(TICK_INTERVAL)

        self.assertEqual(meter.rates(), (10 / TICK_INTERVAL,) * 3)

    def test_second_tick(self) -> None:
        """
        After the first tick, each rate moves towards a tick's rate by the
        share its time constant gives one tick.
        """
        clock = Clock()
        meter = Meter(clock)
        meter.mark()
        clock.advance(TICK_INTERVAL)
        meter.rates()
        for _ in range(10):
            meter.mark()

        clock.advance(TICK_INTERVAL)

        first, second = 1 / TICK_INTERVAL, 10 / TICK_INTERVAL
        expected = [
            first + (second - first) * (1 - math.exp(-TICK_INTERVAL / window))
            for window in (60, 300, 900)
        ]
        for rate, wanted in zip(meter.rates(), expected):
            self.assertAlmostEqual(rate, wanted)

    def test_steady_rate(self) -> None:
        """
        Under a steady 3 events a second for an hour and a half, every
        rate converges on 3 per second.
        """
        clock = Clock()
        meter = Meter(clock)

        steady(clock, meter, 3, 5400)

        for rate in meter.rates():
            self.assertLess(abs(rate - 3.0), 0.01)

    def test_decay(self) -> None:
        """
        Once events stop, each rate falls by a factor e over its own time
        constant, whether it is read every tick or only at the end.
        """
        clock = Clock()
        meter = Meter(clock)
        steady(clock, meter, 2, 5400)
        start = meter.rates()

        clock.advance(60)
        after_a_minute = meter.rates()
        clock.advance(240)
        after_five = meter.rates()

        self.assertAlmostEqual(after_a_minute[0], start[0] / math.e, places=3)
        self.assertAlmostEqual(after_five[1], start[1] / math.e, places=3)
        self.assertAlmostEqual(after_five[2], start[2] * math.exp(-300 / 900), places=3)

    def test_catch_up_same_as_ticking(self) -> None:
        """
        Reading a meter after a long quiet spell gives what reading it at
        every tick would have given.
        """
        watched_clock, idle_clock = Clock(), Clock()
        watched, idle = Meter(watched_clock), Meter(idle_clock)
        for meter in (watched, idle):
            for _ in range(20):
                meter.mark()

        for _ in range(100):
            watched_clock.advance(TICK_INTERVAL)
            watched.rates()
        idle_clock.advance(100 * TICK_INTERVAL)

        for read_often, read_once in zip(watched.rates(), idle.rates()):
            self.assertAlmostEqual(read_often, read_once)

    def test_no_timer(self) -> None:
        """
        A meter leaves no call scheduled on its clock.
        """
        clock = Clock()
        meter = Meter(clock)

        meter.mark()
        clock.advance(60)
        meter.rates()

        self.assertEqual(clock.getDelayedCalls(), [])


class PercentilesTests(SynchronousTestCase):
    """
    L{percentiles} interpolates between the closest ranks.
    """

    def test_known_data(self) -> None:
        """
        Of 1 to 100, the median lies half-way between 50 and 51, and the
        99th percentile just under 100.
        """
        values = [float(n) for n in range(1, 101)]

        result = percentiles(values, (0.5, 0.9, 0.95, 0.99))

        for got, wanted in zip(result, (50.5, 90.1, 95.05, 99.01)):
            self.assertAlmostEqual(got, wanted)

    def test_one_value(self) -> None:
        """
        One value is every percentile.
        """
        self.assertEqual(percentiles([4.0], (0.5, 0.99)), [4.0, 4.0])

    def test_empty(self) -> None:
        """
        With no values, every percentile is zero.
        """
        self.assertEqual(percentiles([], (0.5, 0.9)), [0.0, 0.0])


class DecayingSampleTests(SynchronousTestCase):
    """
    L{DecayingSample} keeps a bounded sample that favours recent values.
    """

    def test_keeps_all_when_few(self) -> None:
        """
        Until the sample is full, it keeps every value.
        """
        sample = DecayingSample(Clock(), size=10, rng=random.Random(1).random)

        for value in (3.0, 1.0, 2.0):
            sample.update(value)

        self.assertEqual(sample.values(), [1.0, 2.0, 3.0])

    def test_bounded(self) -> None:
        """
        However many values are offered, the sample keeps at most its size.
        """
        clock = Clock()
        sample = DecayingSample(clock, rng=random.Random(2).random)

        for value in range(20 * SAMPLE_SIZE):
            sample.update(float(value))
            clock.advance(0.5)

        self.assertEqual(len(sample), SAMPLE_SIZE)

    def test_favours_recent(self) -> None:
        """
        Values offered ten minutes later push out almost all older ones.
        """
        clock = Clock()
        sample = DecayingSample(clock, size=100, rng=random.Random(3).random)
        for _ in range(1000):
            sample.update(1.0)
        clock.advance(600)

        for _ in range(1000):
            sample.update(2.0)

        self.assertGreater(sample.values().count(2.0), 95)

    def test_rescale_keeps_order(self) -> None:
        """
        Across the hourly rescaling, newer values still win over older ones
        with the same luck.
        """
        clock = Clock()
        sample = DecayingSample(clock, size=1, rng=lambda: 0.5)
        sample.update(1.0)
        clock.advance(3 * 3600)

        sample.update(2.0)

        self.assertEqual(sample.values(), [2.0])


class TunnelMetricsTests(SynchronousTestCase):
    """
    L{TunnelMetrics} counts connections and HTTP exchanges in ngrok's
    shape, and feeds its parent.
    """

    def test_shape(self) -> None:
        """
        The JSON has ngrok's keys, in ngrok's order, all zero at first.
        """
        metrics = TunnelMetrics(Clock())

        shape = metrics.to_json()

        rates = ["rate1", "rate5", "rate15", "p50", "p90", "p95", "p99"]
        self.assertEqual(list(shape["conns"]), ["count", "gauge"] + rates)
        self.assertEqual(list(shape["http"]), ["count"] + rates)
        self.assertEqual(set(shape["conns"].values()), {0})

    def test_connections(self) -> None:
        """
        C{count} counts connections opened, C{gauge} those open now, and
        the percentiles are the closed ones' durations in nanoseconds.
        """
        metrics = TunnelMetrics(Clock())
        for _ in range(3):
            metrics.connection_opened()

        metrics.connection_closed(1.0)
        metrics.connection_closed(3.0)

        conns = metrics.to_json()["conns"]
        self.assertEqual((conns["count"], conns["gauge"]), (3, 1))
        self.assertEqual(conns["p50"], 2.0 * NANOSECONDS)
        self.assertEqual(conns["p99"], 2.98 * NANOSECONDS)

    def test_http(self) -> None:
        """
        C{http} counts exchanges with their durations in nanoseconds, and
        its rates move once a tick has passed.
        """
        clock = Clock()
        metrics = TunnelMetrics(clock)

        metrics.http_exchange(0.25)
        clock.advance(TICK_INTERVAL)

        http = metrics.to_json()["http"]
        self.assertEqual(http["count"], 1)
        self.assertEqual(http["p90"], 0.25 * NANOSECONDS)
        self.assertGreater(http["rate1"], 0)
        self.assertEqual(metrics.to_json()["conns"]["count"], 0)

    def test_parent(self) -> None:
        """
        Every event of a tunnel counts in its parent too, which adds up
        its children.
        """
        clock = Clock()
        everything = TunnelMetrics(clock)
        web, api = TunnelMetrics(clock, everything), TunnelMetrics(clock, everything)

        web.connection_opened()
        api.connection_opened()
        api.connection_closed(2.0)
        web.http_exchange(0.5)

        totals = everything.to_json()
        self.assertEqual((totals["conns"]["count"], totals["conns"]["gauge"]), (2, 1))
        self.assertEqual(totals["conns"]["p50"], 2.0 * NANOSECONDS)
        self.assertEqual(totals["http"]["count"], 1)
        self.assertEqual(web.to_json()["conns"]["gauge"], 1)


class WiringTests(SynchronousTestCase):
    """
    Tunnels count their connections in their metrics, and an agent's
    tunnels feed the agent's metrics.
    """

    def test_counted_connection(self) -> None:
        """
        A counted connection is open until closed, then counted with how
        long it was open by the tunnel's clock; a second close is ignored.
        """
        clock = Clock()
        tunnel = Tunnel(WEB, metrics=TunnelMetrics(clock))

        connection = CountedConnection(tunnel)
        opened = (tunnel.total_connections, tunnel.open_connections)
        clock.advance(2.5)
        connection.close()
        connection.close()

        self.assertEqual(opened, (1, 1))
        self.assertEqual((tunnel.total_connections, tunnel.open_connections), (1, 0))
        self.assertEqual(tunnel.metrics.to_json()["conns"]["p50"], 2.5 * NANOSECONDS)

    def test_agent_totals(self) -> None:
        """
        Each tunnel of an agent service has its own metrics on the agent's
        clock, and they feed the agent's.
        """
        clock = Clock()
        second = TunnelDefinition(
            name="api", proto="http", addr=UpstreamAddress("http", "localhost", 81)
        )
        agent = AgentService(
            AgentConfig(), (WEB, second), clock, HostPort("127.0.0.1", 1), None
        )

        CountedConnection(agent.tunnels["web"])
        CountedConnection(agent.tunnels["api"]).close()

        self.assertIs(agent.tunnels["web"].metrics.clock, clock)
        self.assertIs(agent.tunnels["api"].metrics.parent, agent.metrics)
        self.assertEqual(agent.tunnels["web"].open_connections, 1)
        self.assertEqual(
            (agent.metrics.total_connections, agent.metrics.open_connections), (2, 1)
        )

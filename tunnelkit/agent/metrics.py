"""
What a tunnel's traffic looks like in numbers: how many connections and
HTTP exchanges it has had, how many per second lately, and how long they
took, in the shape of ngrok's C{metrics} object.

Rates are exponentially weighted moving averages over 1, 5 and 15 minutes,
like the Unix load average: the events of each 5-second tick are folded in
once the tick is over. As in Go's metrics libraries, the first tick sets
each average to its own rate, so a new tunnel's rates do not creep up from
zero for a quarter of an hour. No timer runs; the ticks that passed are caught up
on whenever an event is counted or the numbers are read, so a meter nobody
uses costs nothing.

Durations go into a sample of bounded size that favours recent events
(forward-decaying priority sampling), and the percentiles are read from
it. Percentiles are reported in nanoseconds, as floats, the unit Go's
metrics libraries (and so ngrok's API) use for durations.
"""

import heapq
import math
import random
import time
from typing import Callable, Protocol, Sequence

TICK_INTERVAL = 5.0
"""Seconds between two updates of the moving averages."""

RATE_WINDOWS = (60.0, 300.0, 900.0)
"""The time constants, in seconds, of C{rate1}, C{rate5} and C{rate15}."""

SAMPLE_SIZE = 1028
"""How many durations a sample keeps at most."""

SAMPLE_DECAY = 0.015
"""How strongly a sample favours recent durations, per second: a duration
measured a minute later is about 2.5 times as likely to be kept."""

RESCALE_INTERVAL = 3600.0
"""Seconds between two rescalings of a sample's priorities, which keep the
exponential weights within a float's range."""

PERCENTILES = (0.5, 0.9, 0.95, 0.99)
"""The percentiles reported, as fractions."""

NANOSECONDS = 1e9
"""Nanoseconds in a second: durations are reported in nanoseconds."""


class MetricsClock(Protocol):
    """
    What the metrics need of a clock: any C{IReactorTime} provider (the
    reactor, or a L{twisted.internet.task.Clock} in tests) serves.
    """

    def seconds(self) -> float:
        """
        @return: the current time, in seconds.
        """


class WallClock:
    """
    The system's time of day, for metrics kept apart from any reactor.
    """

    def seconds(self) -> float:
        """
        @return: the current time, in seconds since the epoch.
        """
        return time.time()


class Meter:
    """
    Counts events and their moving rates per second.

    @ivar count: the events since the meter was made.
    """

    def __init__(self, clock: MetricsClock) -> None:
        self._clock = clock
        self.count = 0
        self._uncounted = 0
        self._rates = [0.0 for _ in RATE_WINDOWS]
        self._ticked = False
        self._next_tick = clock.seconds() + TICK_INTERVAL

    def mark(self) -> None:
        """
        Count one event, now.
        """
        self.mark_at(self._clock.seconds())

    def mark_at(self, now: float) -> None:
        """
        Count one event at C{now}, the clock's current time.
        """
        if now >= self._next_tick:
            self._catch_up(now)
        self.count += 1
        self._uncounted += 1

    def rates(self) -> tuple[float, ...]:
        """
        @return: the 1-, 5- and 15-minute moving averages of events per
            second, as of the last tick that ended.
        """
        self._catch_up(self._clock.seconds())
        return tuple(self._rates)

    def _catch_up(self, now: float) -> None:
        """
        Fold in the ticks that ended since the last call: the first carries
        the events counted meanwhile, any later ones none. The meter's very
        first tick sets the averages to its rate.
        """
        if now < self._next_tick:
            return
        ticks = int((now - self._next_tick) // TICK_INTERVAL) + 1
        instant = self._uncounted / TICK_INTERVAL
        self._uncounted = 0
        self._next_tick += ticks * TICK_INTERVAL

        first, self._ticked = not self._ticked, True

        for index, window in enumerate(RATE_WINDOWS):
            decay = math.exp(-TICK_INTERVAL / window)
            if first:
                rate = instant
            else:
                rate = self._rates[index] * decay + instant * (1.0 - decay)
            self._rates[index] = rate * decay ** (ticks - 1)


class DecayingSample:
    """
    A bounded sample of values that favours recent ones: each value gets
    the priority C{exp(decay * age_of_landmark) / u}, with C{u} uniform in
    (0, 1], and the sample keeps the values of highest priority.
    """

    def __init__(
        self,
        clock: MetricsClock,
        size: int = SAMPLE_SIZE,
        decay: float = SAMPLE_DECAY,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._size = size
        self._decay = decay
        self._rng = rng
        self._heap: list[tuple[float, float]] = []
        self._landmark = clock.seconds()
        self._next_rescale = self._landmark + RESCALE_INTERVAL

    def __len__(self) -> int:
        return len(self._heap)

    def update(self, value: float) -> None:
        """
        Offer one value, measured now.
        """
        self.update_at(value, self._clock.seconds())

    def update_at(self, value: float, now: float) -> None:
        """
        Offer one value, measured at C{now}, the clock's current time.
        """
        if now >= self._next_rescale:
            self._rescale(now)
        weight = math.exp(self._decay * (now - self._landmark))
        entry = (weight / (1.0 - self._rng()), value)

        if len(self._heap) < self._size:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)

    def _rescale(self, now: float) -> None:
        """
        Move the landmark to C{now}, scaling every priority down alike, so
        their order (and so the heap) stays as it was.
        """
        factor = math.exp(-self._decay * (now - self._landmark))
        self._heap = [(priority * factor, value) for priority, value in self._heap]
        self._landmark = now
        self._next_rescale = now + RESCALE_INTERVAL

    def values(self) -> list[float]:
        """
        @return: the values kept, in ascending order.
        """
        return sorted(value for _, value in self._heap)


def percentiles(values: Sequence[float], fractions: Sequence[float]) -> list[float]:
    """
    @param values: values in ascending order.
    @param fractions: the percentiles wanted, each in [0, 1].
    @return: each percentile, interpolated linearly between the two closest
        ranks; C{0.0} for each when there are no values.
    """
    if not values:
        return [0.0 for _ in fractions]
    results = []
    for fraction in fractions:
        position = fraction * (len(values) - 1)
        below = math.floor(position)
        above = min(below + 1, len(values) - 1)
        share = position - below
        results.append(values[below] + (values[above] - values[below]) * share)
    return results


class Timer:
    """
    A meter of events and a sample of their durations.
    """

    def __init__(self, clock: MetricsClock, rng: Callable[[], float]) -> None:
        self._clock = clock
        self.meter = Meter(clock)
        self.durations = DecayingSample(clock, rng=rng)

    def record(self, duration: float) -> None:
        """
        Count one event that ends now, after C{duration} seconds.
        """
        now = self._clock.seconds()
        self.meter.mark_at(now)
        self.durations.update_at(duration, now)

    def to_json(self, gauge: int | None = None) -> dict[str, float]:
        """
        @param gauge: how many are open now, when that is told.
        @return: C{count}, C{gauge} if given, C{rate1}, C{rate5}, C{rate15}
            and C{p50} to C{p99}, the percentiles in nanoseconds.
        """
        shape: dict[str, float] = {"count": self.meter.count}
        if gauge is not None:
            shape["gauge"] = gauge
        rate1, rate5, rate15 = self.meter.rates()
        shape.update(rate1=rate1, rate5=rate5, rate15=rate15)
        measured = percentiles(self.durations.values(), PERCENTILES)
        for fraction, seconds in zip(PERCENTILES, measured):
            shape[f"p{round(fraction * 100)}"] = seconds * NANOSECONDS
        return shape


class TunnelMetrics:
    """
    The connections and HTTP exchanges of one tunnel, or of all of them.

    Connection rates count connections as they open; connection durations
    are those of closed connections. HTTP rates count exchanges as they
    end, with their durations.

    @ivar clock: the clock events are timed by.
    @ivar parent: the metrics of all tunnels, fed every event too.
    @ivar open_connections: connections open now.
    """

    def __init__(
        self,
        clock: MetricsClock,
        parent: "TunnelMetrics | None" = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.clock = clock
        self.parent = parent
        self.open_connections = 0
        self._conns = Timer(clock, rng)
        self._http = Timer(clock, rng)

    @property
    def total_connections(self) -> int:
        """
        @return: the connections opened since the metrics were made.
        """
        return self._conns.meter.count

    def connection_opened(self) -> None:
        """
        Count a connection that opens now.
        """
        self.open_connections += 1
        self._conns.meter.mark()
        if self.parent is not None:
            self.parent.connection_opened()

    def connection_closed(self, duration_seconds: float) -> None:
        """
        Count a connection that closes now, after C{duration_seconds} open.
        """
        self.open_connections -= 1
        self._conns.durations.update(duration_seconds)
        if self.parent is not None:
            self.parent.connection_closed(duration_seconds)

    def http_exchange(self, duration_seconds: float) -> None:
        """
        Count an HTTP request answered now, C{duration_seconds} after it
        began.
        """
        self._http.record(duration_seconds)
        if self.parent is not None:
            self.parent.http_exchange(duration_seconds)

    def to_json(self) -> dict[str, dict[str, float]]:
        """
        @return: ngrok's C{metrics} object: C{conns} with C{count},
            C{gauge} (open now), C{rate1}, C{rate5}, C{rate15} (per second)
            and C{p50}, C{p90}, C{p95}, C{p99} (nanoseconds); C{http} the
            same without C{gauge}.
        """
        return {
            "conns": self._conns.to_json(gauge=self.open_connections),
            "http": self._http.to_json(),
        }

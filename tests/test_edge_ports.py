"""
Tests for L{tunnelkit.edge.ports}: the book of public TCP ports, their
grace periods, and the affinity tokens that name a port across restarts.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.config import PortRange
from tunnelkit.edge.ports import AffinityTokens, PortBook, PortHold


class ScriptedRandom:
    """
    A stand-in for L{random.Random} whose C{randint} answers from a script,
    so a test decides which ports the random phase of
    L{PortBook.candidates} tries.

    @ivar calls: the C{(low, high)} arguments of each draw.
    """

    def __init__(self, script: list[int]) -> None:
        self._script = list(script)
        self.calls: list[tuple[int, int]] = []

    def randint(self, low: int, high: int) -> int:
        """
        @return: the next scripted value, which must lie in C{[low, high]}.
        @raise AssertionError: when the script is used up or a value is
            out of bounds, which ends any loop that draws too often.
        """
        self.calls.append((low, high))
        if not self._script:
            raise AssertionError("the scripted draws are used up")
        value = self._script.pop(0)
        if not low <= value <= high:
            raise AssertionError(f"scripted {value} is outside {low}-{high}")
        return value


class CandidatesTests(SynchronousTestCase):
    """
    L{PortBook.candidates} offers free ports of the range.
    """

    def test_in_range_and_free(self) -> None:
        """
        Every candidate lies in the range, is not held, and is offered once.
        """
        book = PortBook(PortRange(20000, 20099), rng=random.Random(4))
        held = set(range(20000, 20100, 3))
        for port in held:
            book.hold(port, "s1", f"b{port}")

        offered = list(book.candidates(limit=40))

        self.assertEqual(len(offered), 40)
        self.assertEqual(len(set(offered)), 40)
        self.assertTrue(all(20000 <= port <= 20099 for port in offered))
        self.assertEqual(set(offered) & held, set())

    def test_limit(self) -> None:
        """
        No more than C{limit} ports are offered.
        """
        book = PortBook(PortRange(20000, 29999), rng=random.Random(1))

        offered = list(book.candidates(limit=5))

        self.assertEqual(len(offered), 5)

    def test_full_range_yields_nothing(self) -> None:
        """
        When every port of the range is held there is no candidate.
        """
        book = PortBook(PortRange(20000, 20004), rng=random.Random(2))
        for port in range(20000, 20005):
            book.hold(port, "s1", f"b{port}")

        offered = list(book.candidates())

        self.assertEqual(offered, [])

    def test_single_port_range(self) -> None:
        """
        A range of one free port offers that port.
        """
        book = PortBook(PortRange(20000, 20000), rng=random.Random(3))

        offered = list(book.candidates())

        self.assertEqual(offered, [20000])

    def test_crowded_range_found_by_scan(self) -> None:
        """
        When the random draws hit only held ports, a scan from a random
        start still finds the one free port.
        """
        rng = ScriptedRandom([20000, 20001, 20002, 20003, 0])
        book = PortBook(PortRange(20000, 20999), rng=rng)  # type: ignore[arg-type]
        for port in range(20000, 21000):
            if port != 20777:
                book.hold(port, "s1", f"b{port}")

        offered = list(book.candidates(limit=1))

        self.assertEqual(offered, [20777])
        self.assertEqual(rng.calls[-1], (0, 999))

    def test_scan_wraps_around(self) -> None:
        """
        The scan starts at the drawn offset and wraps to the range's start.
        """
        rng = ScriptedRandom([20002, 20003, 20004, 20005, 7])
        book = PortBook(PortRange(20000, 20009), rng=rng)  # type: ignore[arg-type]
        for port in range(20000, 20010):
            if port != 20001:
                book.hold(port, "s1", f"b{port}")

        offered = list(book.candidates(limit=1))

        self.assertEqual(offered, [20001])


class HoldTests(SynchronousTestCase):
    """
    Holding and releasing ports.
    """

    def setUp(self) -> None:
        self.book = PortBook(PortRange(20000, 20099))

    def test_hold(self) -> None:
        """
        A held port has a holder naming the session and binding, and is not
        free.
        """
        self.book.hold(20001, "s1", "ssh")

        self.assertEqual(self.book.holder(20001), PortHold(20001, "s1", "ssh"))
        self.assertFalse(self.book.is_free(20001))

    def test_unheld(self) -> None:
        """
        A port nobody holds has no holder and is free.
        """
        self.assertIsNone(self.book.holder(20001))
        self.assertTrue(self.book.is_free(20001))

    def test_release(self) -> None:
        """
        A released port is free at once.
        """
        self.book.hold(20001, "s1", "ssh")

        self.book.release(20001)

        self.assertTrue(self.book.is_free(20001))
        self.assertIsNone(self.book.holder(20001))

    def test_release_unheld(self) -> None:
        """
        Releasing a port nobody holds changes nothing.
        """
        self.book.hold(20002, "s1", "ssh")

        self.book.release(20001)

        self.assertFalse(self.book.is_free(20002))

    def test_held_for(self) -> None:
        """
        C{held_for} gives the port of a session's binding.
        """
        self.book.hold(20001, "s1", "ssh")
        self.book.hold(20002, "s1", "db")

        self.assertEqual(self.book.held_for("s1", "db"), 20002)

    def test_held_for_other_binding_or_session(self) -> None:
        """
        C{held_for} answers C{None} for another binding or another session.
        """
        self.book.hold(20001, "s1", "ssh")

        self.assertIsNone(self.book.held_for("s1", "db"))
        self.assertIsNone(self.book.held_for("s2", "ssh"))

    def test_has_holds(self) -> None:
        """
        C{has_holds} says whether a session holds any port.
        """
        self.book.hold(20001, "s1", "ssh")

        self.assertTrue(self.book.has_holds("s1"))
        self.assertFalse(self.book.has_holds("s2"))


class GraceTests(SynchronousTestCase):
    """
    A dropped session's ports stay held for the grace period.
    """

    def setUp(self) -> None:
        self.book = PortBook(PortRange(20000, 20099))
        self.book.hold(20001, "s1", "ssh")
        self.book.hold(20002, "s1", "db")
        self.book.hold(20003, "s2", "ssh")

    def test_dropped_ports(self) -> None:
        """
        C{session_dropped} returns the session's ports and sets when their
        grace ends; other sessions' ports are untouched.
        """
        ports = self.book.session_dropped("s1", now=100.0, grace=60.0)

        self.assertEqual(sorted(ports), [20001, 20002])
        self.assertEqual(self.book.holder(20001).expires, 160.0)  # type: ignore
        self.assertIsNone(self.book.holder(20003).expires)  # type: ignore

    def test_still_held_in_grace(self) -> None:
        """
        During the grace period the ports are neither free nor expired, and
        the session still counts as holding them.
        """
        self.book.session_dropped("s1", now=100.0, grace=60.0)

        expired = self.book.expire(159.9)

        self.assertEqual(expired, [])
        self.assertFalse(self.book.is_free(20001))
        self.assertTrue(self.book.has_holds("s1"))
        self.assertEqual(self.book.held_for("s1", "ssh"), 20001)

    def test_expire(self) -> None:
        """
        When the grace period ends C{expire} frees the session's ports and
        returns them.
        """
        self.book.session_dropped("s1", now=100.0, grace=60.0)

        expired = self.book.expire(160.0)

        self.assertEqual(sorted(expired), [20001, 20002])
        self.assertTrue(self.book.is_free(20001))
        self.assertFalse(self.book.has_holds("s1"))
        self.assertFalse(self.book.is_free(20003))

    def test_next_expiry_none(self) -> None:
        """
        With no session in its grace period there is no next expiry.
        """
        self.assertIsNone(self.book.next_expiry())

    def test_next_expiry_earliest(self) -> None:
        """
        C{next_expiry} is the earliest end of any grace period.
        """
        self.book.session_dropped("s2", now=100.0, grace=60.0)
        self.book.session_dropped("s1", now=110.0, grace=30.0)

        self.assertEqual(self.book.next_expiry(), 140.0)

    def test_hold_again_ends_grace(self) -> None:
        """
        Holding a port again for a reconnected session clears its expiry.
        """
        self.book.session_dropped("s1", now=100.0, grace=60.0)

        self.book.hold(20001, "s1", "ssh")

        self.assertIsNone(self.book.holder(20001).expires)  # type: ignore
        self.assertEqual(self.book.expire(500.0), [20002])

    def test_drop_unknown_session(self) -> None:
        """
        Dropping a session that holds nothing returns no port.
        """
        ports = self.book.session_dropped("s9", now=100.0, grace=60.0)

        self.assertEqual(ports, [])
        self.assertIsNone(self.book.next_expiry())


class AffinityTokenTests(SynchronousTestCase):
    """
    L{AffinityTokens} issues tokens that name a port for a session and
    binding, and recognises only its own.
    """

    def setUp(self) -> None:
        self.tokens = AffinityTokens(b"k" * 32)

    def test_round_trip(self) -> None:
        """
        A token names the port it was issued for.
        """
        token = self.tokens.issue("s1", "ssh", 20001)

        self.assertEqual(self.tokens.port_of(token, "s1", "ssh"), 20001)

    def test_same_secret_other_instance(self) -> None:
        """
        An edge started again with the same secret accepts the token.
        """
        token = self.tokens.issue("s1", "ssh", 20001)

        port = AffinityTokens(b"k" * 32).port_of(token, "s1", "ssh")

        self.assertEqual(port, 20001)

    def test_wrong_session(self) -> None:
        """
        A token issued for another session is refused.
        """
        token = self.tokens.issue("s1", "ssh", 20001)

        self.assertIsNone(self.tokens.port_of(token, "s2", "ssh"))

    def test_wrong_binding(self) -> None:
        """
        A token issued for another binding is refused.
        """
        token = self.tokens.issue("s1", "ssh", 20001)

        self.assertIsNone(self.tokens.port_of(token, "s1", "db"))

    def test_wrong_secret(self) -> None:
        """
        A token issued under another secret is refused.
        """
        token = AffinityTokens(b"x" * 32).issue("s1", "ssh", 20001)

        self.assertIsNone(self.tokens.port_of(token, "s1", "ssh"))

    def test_other_port(self) -> None:
        """
        Changing the port of a token makes it invalid.
        """
        token = self.tokens.issue("s1", "ssh", 20001)
        mac = token.partition(".")[2]

        self.assertIsNone(self.tokens.port_of(f"20002.{mac}", "s1", "ssh"))

    def test_separator_is_unambiguous(self) -> None:
        """
        Moving text between the session and binding ids gives another token.
        """
        token = self.tokens.issue("s1", "ssh", 20001)

        self.assertIsNone(self.tokens.port_of(token, "s1s", "sh"))

    def test_malformed(self) -> None:
        """
        Malformed tokens are refused without raising.
        """
        mac = self.tokens.issue("s1", "ssh", 20001).partition(".")[2]
        malformed = ["", ".", "20001", "20001.", f".{mac}", f"-1.{mac}", "abc.def"]

        ports = [self.tokens.port_of(token, "s1", "ssh") for token in malformed]

        self.assertEqual(ports, [None] * len(malformed))

    def test_malformed_digit_like_port(self) -> None:
        """
        A port written with characters that C{str.isdigit} accepts but
        C{int} does not (superscripts) is refused without raising.
        """
        mac = self.tokens.issue("s1", "ssh", 20001).partition(".")[2]

        port = self.tokens.port_of(f"\u00b2\u00b9.{mac}", "s1", "ssh")

        self.assertIsNone(port)

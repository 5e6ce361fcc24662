"""
Tests for L{tunnelkit.edge.hosts}: host names, patterns, random names and
the table that routes hosts to bindings.
"""

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.edge.hosts import (
    RANDOM_NAME_LENGTH,
    HostTable,
    _normalise_remembered,
    is_valid_pattern,
    normalise_host,
    normalise_host_header,
    pattern_covers,
    random_name,
)


class NormaliseHostTests(SynchronousTestCase):
    """
    L{normalise_host} turns Host headers into the names routes use.
    """

    def test_lower_case_without_port(self) -> None:
        """
        The name is lower-cased and loses its port and trailing dot.
        """
        self.assertEqual(normalise_host(b"Web.Example.COM.:8080"), "web.example.com")

    def test_ipv6_literal(self) -> None:
        """
        An IPv6 literal loses its brackets and port.
        """
        self.assertEqual(normalise_host("[::1]:80"), "::1")

    def test_invalid(self) -> None:
        """
        Names with characters DNS does not allow, empty names, non-numeric
        ports, wildcards and non-ASCII bytes are refused.
        """
        for value in (
            b"",
            b"a b.com",
            b"x.com:http",
            b"*.x.com",
            b"\xff.com",
            b"-a.b",
            b"[web.tunnels.test]:zz@evil",
            b"[::1]x",
            b"[::1",
        ):
            self.assertIsNone(normalise_host(value), value)


class NormaliseHostHeaderTests(SynchronousTestCase):
    """
    L{normalise_host_header} answers as L{normalise_host}, remembering only
    values short enough to be names.
    """

    def test_same_answers(self) -> None:
        """
        Valid and invalid values get L{normalise_host}'s answer, the first
        time and again.
        """
        for value in (b"Web.Example.COM.:8080", b"[::1]:80", b"a b.com", b"*.x.com"):
            expected = normalise_host(value)
            self.assertEqual(normalise_host_header(value), expected, value)
            self.assertEqual(normalise_host_header(value), expected, value)

    def test_long_values_not_remembered(self) -> None:
        """
        A value longer than any name with a port is refused and leaves the
        memory as it was.
        """
        remembered = _normalise_remembered.cache_info().currsize
        value = b"a" * 300 + b".example.com"

        self.assertIsNone(normalise_host_header(value))
        self.assertEqual(_normalise_remembered.cache_info().currsize, remembered)


class PatternTests(SynchronousTestCase):
    """
    Hostname patterns from C{edge.yml} cover names and wildcards.
    """

    def test_exact(self) -> None:
        """
        An exact pattern covers only its own name.
        """
        self.assertTrue(pattern_covers("app.example.com", "app.example.com"))
        self.assertFalse(pattern_covers("app.example.com", "x.app.example.com"))

    def test_wildcard_covers_names_below(self) -> None:
        """
        A wildcard covers names at any depth below its suffix, and narrower
        wildcards, but not the suffix itself or look-alike names.
        """
        self.assertTrue(pattern_covers("*.example.com", "a.example.com"))
        self.assertTrue(pattern_covers("*.example.com", "a.b.example.com"))
        self.assertTrue(pattern_covers("*.example.com", "*.b.example.com"))
        self.assertTrue(pattern_covers("*.example.com", "*.example.com"))
        self.assertFalse(pattern_covers("*.example.com", "example.com"))
        self.assertFalse(pattern_covers("*.example.com", "badexample.com"))

    def test_valid_patterns(self) -> None:
        """
        Names and single leading wildcards are valid patterns.
        """
        self.assertTrue(is_valid_pattern("*.example.com"))
        self.assertTrue(is_valid_pattern("a-b.example.com"))
        self.assertFalse(is_valid_pattern("a.*.example.com"))
        self.assertFalse(is_valid_pattern("exa mple.com"))


class RandomNameTests(SynchronousTestCase):
    """
    Random names are stable for a session's binding and differ otherwise.
    """

    def test_stable(self) -> None:
        """
        The same secret, scope and binding give the same name.
        """
        self.assertEqual(
            random_name(b"k", "alice\0s1", "web"), random_name(b"k", "alice\0s1", "web")
        )

    def test_differs(self) -> None:
        """
        Another scope, binding, attempt or secret gives another name, of hex
        digits.
        """
        names = {
            random_name(b"k", "alice\0s1", "web"),
            random_name(b"k", "alice\0s2", "web"),
            random_name(b"k", "alice\0s1", "api"),
            random_name(b"k", "alice\0s1", "web", 1),
            random_name(b"j", "alice\0s1", "web"),
        }

        self.assertEqual(len(names), 5)
        for name in names:
            self.assertEqual(len(name), RANDOM_NAME_LENGTH)
            int(name, 16)


class HostTableTests(SynchronousTestCase):
    """
    L{HostTable} finds the binding for a host: exact first, then the most
    specific wildcard.
    """

    def setUp(self) -> None:
        self.table: HostTable[str] = HostTable()

    def test_exact(self) -> None:
        """
        An exact name is found; others are not.
        """
        self.table.add("web.example.com", "web")

        self.assertEqual(self.table.lookup("web.example.com"), "web")
        self.assertIsNone(self.table.lookup("api.example.com"))

    def test_most_specific_wildcard(self) -> None:
        """
        The wildcard nearest the host wins, and an exact name beats both.
        """
        self.table.add("*.example.com", "outer")
        self.table.add("*.dev.example.com", "inner")
        self.table.add("x.dev.example.com", "exact")

        self.assertEqual(self.table.lookup("a.example.com"), "outer")
        self.assertEqual(self.table.lookup("a.b.example.com"), "outer")
        self.assertEqual(self.table.lookup("y.dev.example.com"), "inner")
        self.assertEqual(self.table.lookup("x.dev.example.com"), "exact")
        self.assertIsNone(self.table.lookup("example.com"))

    def test_remove_only_same_binding(self) -> None:
        """
        Removing a name takes it out only if the binding given holds it.
        """
        self.table.add("web.example.com", "new")

        self.table.remove("web.example.com", "old")
        self.assertEqual(self.table.get("web.example.com"), "new")
        self.table.remove("web.example.com", "new")
        self.assertIsNone(self.table.get("web.example.com"))

    def test_values(self) -> None:
        """
        Every binding, exact and wildcard, is listed.
        """
        self.table.add("a.example.com", "a")
        self.table.add("*.example.com", "w")

        self.assertEqual(sorted(self.table.values()), ["a", "w"])

"""
Tests for L{tunnelkit.addresses}.
"""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.addresses import format_address
from tunnelkit.mux.protocol import StreamAddress


class FormatAddressTests(SynchronousTestCase):
    """
    Tests for L{format_address}.
    """

    def test_ipv4(self) -> None:
        """
        An IPv4 address is written C{host:port}.
        """
        address = IPv4Address("TCP", "127.0.0.1", 4443)

        self.assertEqual(format_address(address), "127.0.0.1:4443")

    def test_ipv6(self) -> None:
        """
        An IPv6 host is put in brackets.
        """
        address = IPv6Address("TCP", "::1", 4443)

        self.assertEqual(format_address(address), "[::1]:4443")

    def test_stream(self) -> None:
        """
        A stream's address is its connection's address and the stream id.
        """
        address = StreamAddress(IPv4Address("TCP", "10.0.0.7", 50000), 5)

        self.assertEqual(format_address(address), "10.0.0.7:50000 stream 5")

    def test_other(self) -> None:
        """
        An address without host and port is written as C{str()} writes it.
        """
        address = UNIXAddress(b"/run/edge.sock")

        self.assertEqual(format_address(address), str(address))

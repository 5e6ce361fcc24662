"""
Socket options tunnelkit sets on the connections it makes and accepts.
"""

from typing import Any

_MAX_LAYERS = 4
"""How many wrapping transports (TLS, for instance) are looked through."""


def set_no_delay(transport: Any) -> bool:
    """
    Turn off Nagle's algorithm on the TCP socket under C{transport}, looking
    through wrapping transports such as TLS.

    Every tunnelkit connection carries request/response traffic whose small
    writes must not wait for the peer's delayed acknowledgement (up to 40 ms
    on Linux): a yamux window update followed by a response, or a response
    head followed by its body, would otherwise stall.

    @param transport: a connected transport.
    @return: whether a TCP socket was found and set.
    """
    for _ in range(_MAX_LAYERS):
        if transport is None:
            return False
        set_option = getattr(transport, "setTcpNoDelay", None)
        if set_option is not None:
            try:
                set_option(True)
            except OSError:
                return False
            return True
        transport = getattr(transport, "transport", None)
    return False

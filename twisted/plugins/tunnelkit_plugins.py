"""
The twistd plugins of tunnelkit: C{twistd -n tunnel} runs the agent and
C{twistd -n tunnel-edge} runs the edge, and C{twistd --reactor tunnelkit}
runs either on the reactor the C{tunnelkit} command uses. Options, services
and the reactor live in the package; this file only names them.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

tunnel = ServiceMaker(
    "tunnelkit agent",
    "tunnelkit.agent.tap",
    "A tunnelkit agent: connects to an edge and starts the config's tunnels.",
    "tunnel",
)

tunnelEdge = ServiceMaker(
    "tunnelkit edge",
    "tunnelkit.edge.tap",
    "A tunnelkit edge: accepts agents and serves their public endpoints.",
    "tunnel-edge",
)

tunnelkitReactor = Reactor(
    "tunnelkit",
    "tunnelkit.reactor",
    "epoll without a logging context per read and write (Linux only).",
)

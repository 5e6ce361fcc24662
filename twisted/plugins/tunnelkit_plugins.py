"""
The twistd plugins of tunnelkit: C{twistd -n tunnel} runs the agent and
C{twistd -n tunnel-edge} runs the edge. Options and services live in the
package; this file only names them.
"""

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

"""
The edge: owns the public listeners and the sessions of the agents that
dial in.
"""

from tunnelkit.edge.server import EdgeServer

__all__ = ["EdgeServer"]

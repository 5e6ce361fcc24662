"""
The agent: its session to the edge, its tunnels, and the local services,
file server and TLS termination their connections reach.
"""

"""
tunnelkit: self-hosted secure tunnels, an ngrok-style agent and edge on Twisted.
"""

__version__ = "0.1.0.dev0"

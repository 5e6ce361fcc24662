"""
Makes the canary backend known to the tunnelkit edge: Twisted's plugin
system finds this module in C{twisted/plugins/}, and the edge asks it for
every object providing its backend factory interface.
"""

from canary_backend import CanaryFactory

canary = CanaryFactory()

"""
Packaging for tunnelkit-canary-backend, an example backend plugin for the
tunnelkit edge: requests carrying a chosen header go to canary tunnels.
"""

from setuptools import setup

setup(
    name="tunnelkit-canary-backend",
    version="1.0.0",
    description="A tunnelkit edge backend that routes by a header to canary tunnels",
    license="MIT",
    python_requires=">=3.11",
    packages=["canary_backend", "twisted.plugins"],
    install_requires=["tunnelkit"],
)

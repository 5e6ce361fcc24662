"""
Packaging for tunnelkit, a self-hosted secure-tunnel agent and edge.
"""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="tunnelkit",
    version="0.1.0.dev0",
    description="Self-hosted secure tunnels: an ngrok-style agent and edge on Twisted",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["tunnelkit", "tunnelkit.*"]) + ["twisted.plugins"],
    package_data={"tunnelkit.web": ["static/*", "templates/*"]},
    install_requires=[
        "twisted[tls,conch]>=24.7.0",
        "pyopenssl>=24.0.0",
        "service-identity>=24.1.0",
        "cryptography>=42.0.0",
        "treq>=24.9.1",
        "klein>=24.8.0",
        "zope.interface>=6.0",
        "pyyaml>=6.0",
        "httptools>=0.6.1",
    ],
    extras_require={
        "test": [
            "wheel>=0.40",
            "hypothesis>=6.100",
            "coverage>=7.4",
            "websockets>=13.0",
            "selenium>=4.20",
        ],
        "lint": ["black>=24.3", "mypy>=1.10"],
        "docs": ["pydoctor>=24.3"],
    },
    entry_points={"console_scripts": ["tunnelkit = tunnelkit.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: Proxy Servers",
    ],
)

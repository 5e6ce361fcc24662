"""
C{python -m tunnelkit}: the same as the C{tunnelkit} command.
"""

from tunnelkit.cli import main

main()

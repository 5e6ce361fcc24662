"""
Benchmarks of tunnelkit, each a script run as C{python bench/NAME.py}.
"""

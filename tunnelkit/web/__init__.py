"""
The agent's web interface on C{web_addr}: the REST API, the inspector and the
status page.
"""

"""NGX Pulse domain: entries, validation, scoring, baselines and use cases.

Imports only the standard library, so it runs unchanged in the local agent and the server.
"""

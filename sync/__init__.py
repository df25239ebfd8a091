"""The sync protocol with no I/O (clock, mutation format, merge rules) and the client engine.

Submodules import their third-party dependencies themselves, so importing `sync.hlc` stays cheap.
"""

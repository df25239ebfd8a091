"""The `pulse` command and the local agent: SQLite store, importers, rendering."""

__version__ = "0.1.0"

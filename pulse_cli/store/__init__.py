"""The device's local store: SQLite through the standard `sqlite3` module."""

"""Postgres adapters: table models, the engine and pool, the entry repository."""

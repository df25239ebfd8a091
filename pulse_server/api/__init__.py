"""The HTTP API (FastAPI): one router module per resource, built by `create_app`."""

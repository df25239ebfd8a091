"""The Electric-compatible HTTP Shape API (`GET /v1/shape`), served from the shape log."""

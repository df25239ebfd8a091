"""Logical replication into the shape log: the pgoutput decoder, the reader and its leadership."""

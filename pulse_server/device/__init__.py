"""The app `pulse agent --serve` runs: the PWA and the endpoints it uses, over a device's own store.

The cloud app (`pulse_server.api.app`) serves Postgres; this one serves whatever `DeviceBackend` it is
given (the local agent gives it the device's SQLite store), with the same PWA, the same push wire
format, the same Electric shape protocol and the same error bodies.
"""

"""`pulse agent --serve`: the PWA over this device's store, while the agent keeps it in sync."""

from __future__ import annotations

import errno
import logging
import socket

from pulse_cli.agent.daemon import Agent, quiet_logging
from pulse_cli.agent.device_backend import load_backend
from pulse_cli.agent.runner import LoginRequired
from pulse_cli.bootstrap import Device
from pulse_core.errors import PulseError, UsageError

log = logging.getLogger("pulse.agent")


def serve(device: Device, host: str, port: int, interval_s: float) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn's), then stop the agent after the round in hand. Everything
    that can be refused is refused before anything starts: not signed in, a coach's home, a port in use."""
    import uvicorn

    from pulse_server.device.app import create_device_app

    backend = load_backend(device.home, device.upstream)
    if backend is None:
        raise LoginRequired("account: not logged in; run pulse login --server URL --username NAME first")
    if backend.role == "coach":
        raise UsageError("account", backend.username, "an athlete's account",
                         f"account: the web app is for athletes, and {backend.username} is a coach here: run"
                         " pulse agent without --serve to keep this device in sync, and read with pulse report")
    listening = listen(host, port)
    quiet_logging()
    app = create_device_app(backend)
    agent = Agent(device, interval_s=interval_s)
    agent.start()
    log.info("the app is at http://%s:%d/app/ (sign in as %s)", host, port, backend.username)
    # No proxy in front: the socket's address is the client's (uvicorn would otherwise believe the
    # X-Forwarded-For of any local client, and the sign-in throttle counts per address).
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False)
    try:
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        agent.shutdown()
        listening.close()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one line and exit 1, before the agent or
    the app start (uvicorn would print its own error after the app's address, and the agent exit 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PulseError(f"port: {host}:{port} is in use (address already in use): another pulse agent --serve?"
                             " choose another with --port") from None
        raise PulseError(f"host: cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}") from None
    sock.set_inheritable(True)
    return sock

"""`pulse agent --serve`: the PWA over this device's store, while the agent keeps it in sync."""

from __future__ import annotations

import logging

from pulse_cli.agent.daemon import Agent, quiet_logging
from pulse_cli.agent.device_backend import load_backend
from pulse_cli.agent.runner import LoginRequired
from pulse_cli.bootstrap import Device

log = logging.getLogger("pulse.agent")


def serve(device: Device, host: str, port: int, interval_s: float) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn's), then stop the agent after the round in hand."""
    import uvicorn

    from pulse_server.device.app import create_device_app

    backend = load_backend(device.home, device.upstream)
    if backend is None:
        raise LoginRequired("account: not logged in; run pulse login --server URL --username NAME first")
    quiet_logging()
    app = create_device_app(backend)
    agent = Agent(device, interval_s=interval_s)
    agent.start()
    log.info("the app is at http://%s:%d/app/ (sign in as %s)", host, port, backend.username)
    try:
        # No proxy in front: the socket's address is the client's (uvicorn would otherwise believe the
        # X-Forwarded-For of any local client, and the sign-in throttle counts per address).
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False)
    finally:
        agent.shutdown()

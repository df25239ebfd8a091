"""The second target: `pulse agent --serve` on a device logged in to the cloud server.

The page talks only to the agent (the device app over the device's SQLite store); the agent relays its
writes to the cloud server and follows the user's shape, so `stored` still reads Postgres: a day the
page logged has gone browser -> device -> Postgres. CLI devices are other homes syncing with the cloud.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from browser_support import Target
from sync_support import Device, ServedDevice, User


def agent_target(
    cloud: Target, user: User, tmp_path: Path, started: list[ServedDevice],
    new_device: Callable[[str], Device],
) -> Target:
    home = new_device("agent")  # logged in to the cloud server as the user
    served = ServedDevice(home, tmp_path / "agent-serve.log")
    started.append(served)
    return Target("agent", served.url, user.username, user.password, new_device, cloud.stored, cloud.settle)

"""nginx in front of local `pulse-server` instances, as deploy/nginx/pulse.conf sets it up, run as a
process of our own: a temp folder with a minimal main configuration (Debian's, less the system paths)
including the shipped site file with only its listen address and its upstream servers replaced.

Used by bench/proxy_overhead.py and by the drill tests (tests/drill)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "pulse.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN = """\
daemon off;
{user}
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    gzip on;  # as in Debian's nginx.conf: the site must turn it off for what it proxies
    include {root}/pulse.conf;
}}
"""


def available() -> bool:
    return Path(NGINX).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_config(listen_port: int, upstream_ports: list[int]) -> str:
    """deploy/nginx/pulse.conf with its listen address and upstream servers replaced, nothing else."""
    text = SITE.read_text()
    servers = re.findall(r"^ *server 127\.0\.0\.1:800\d .*;$", text, flags=re.MULTILINE)
    assert len(servers) == 3, "deploy/nginx/pulse.conf: expected three upstream server lines"
    options = servers[0].strip().split(" ", 2)[2]  # "max_fails=1 fail_timeout=1s;"
    lines = "\n".join(f"    server 127.0.0.1:{port} {options}" for port in upstream_ports)
    text = text.replace("\n".join(servers), lines)
    text, listens = re.subn(r"^    listen 80;$", f"    listen 127.0.0.1:{listen_port};", text, flags=re.MULTILINE)
    assert listens == 1, "deploy/nginx/pulse.conf: expected one `listen 80;`"
    return text


class Nginx:
    """`nginx` in the foreground with its own folder, listening on a free port of 127.0.0.1."""

    def __init__(self, upstream_ports: list[int], root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="pulse-nginx-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As root, the workers would run as `nobody`, who cannot enter a test's private temp folder.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.root / "nginx.conf").write_text(MAIN.format(root=self.root, user=user))
        (self.root / "pulse.conf").write_text(site_config(self.port, upstream_ports))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        check = subprocess.run([NGINX, "-t", "-p", str(self.root), "-c", str(self.root / "nginx.conf")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([NGINX, "-p", str(self.root), "-c", str(self.root / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.error_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen in {timeout_s} s:\n{self.error_log()}")

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until /readyz through the proxy says 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"/readyz through nginx not 200 after {timeout_s} s")

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

"""What the server ships for the PWA: the shell, its service worker (versioned by content), the manifest
and the icons, with headers that keep browsers from mixing stale and fresh files."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import httpx
from sync_support import PulseServer

from pulse_server.web import STATIC, shell_version


def test_the_service_worker_carries_the_shells_content_hash_and_is_never_cached(cloud_server: PulseServer) -> None:
    response = httpx.get(f"{cloud_server.url}/app/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    version = re.search(r"const VERSION = '([0-9a-f]{16})';", response.text)
    assert version is not None and version.group(1) == shell_version()
    assert "__SHELL_VERSION__" not in response.text


def test_the_service_worker_follows_the_files_on_disk_without_a_restart(web_server: PulseServer,
                                                                        web_root: Path) -> None:
    def served_version() -> str:
        found = re.search(r"const VERSION = '([0-9a-f]{16})';", httpx.get(f"{web_server.url}/app/sw.js").text)
        assert found is not None
        return found.group(1)

    before = served_version()
    assert before == shell_version(web_root)
    with (web_root / "js" / "score.js").open("a") as changed:
        changed.write("\n// changed on disk\n")
    after = served_version()
    assert after != before and after == shell_version(web_root)
    assert httpx.get(f"{web_server.url}/app/js/score.js").text.endswith("// changed on disk\n")


def test_the_shell_version_changes_when_any_file_does(tmp_path: Path) -> None:
    root = tmp_path
    (root / "js").mkdir()
    (root / "js" / "a.js").write_text("one")
    before = shell_version(root)
    (root / "js" / "a.js").write_text("two")
    assert shell_version(root) != before


def test_every_shell_file_the_worker_caches_is_served(cloud_server: PulseServer) -> None:
    worker = (STATIC / "sw.js").read_text()
    listed = re.search(r"const SHELL = \[(.*?)\];", worker, re.S)
    assert listed is not None
    paths = re.findall(r"'([^']+)'", listed.group(1))
    assert {p.name for p in (STATIC / "js").glob("*.js")} <= {p.removeprefix("js/") for p in paths}
    with httpx.Client(base_url=f"{cloud_server.url}/app/") as http:
        for path in paths:
            response = http.get(path)
            assert response.status_code == 200, path
            assert response.headers["cache-control"] == "no-cache", path


def test_the_manifest_and_its_icons(cloud_server: PulseServer) -> None:
    with httpx.Client(base_url=f"{cloud_server.url}/app/") as http:
        response = http.get("manifest.webmanifest")
        assert response.headers["content-type"].startswith("application/manifest+json")
        manifest = json.loads(response.text)
        assert manifest["start_url"].startswith("./") and manifest["display"] == "standalone"
        sizes = {}
        for icon in manifest["icons"]:
            data = http.get(icon["src"]).content
            if icon["type"] == "image/png":
                assert data[:8] == b"\x89PNG\r\n\x1a\n"
                sizes[icon["sizes"]] = struct.unpack(">II", data[16:24])
            else:
                assert data.lstrip().startswith(b"<svg")
        assert sizes == {"192x192": (192, 192), "512x512": (512, 512)}
    redirect = httpx.get(f"{cloud_server.url}/app", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/app/"

"""Browser-test plumbing: Debian's chromium through Playwright, and a real `gigavision serve`.

Fixtures:
- ``gigavision_server``: a ``gigavision serve`` process on a free loopback port over a workspace
  holding the ``gigapixel_tiff`` fixture (from tests/conftest.py) and a small image whose name is HTML.
  Set ``GIGAVISION_BROWSER_BASE_URL`` to run the tests against a server that is already running instead.
- ``chromium_browser``: Debian's chromium (never a downloaded browser), headless.
- ``html_image_name``: the HTML-looking file name ingested next to the gigapixel image.
- ``page``: a fresh tab that fails the test on an uncaught page error.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A file name that is also HTML: the viewer must show it as text, never parse it.
HTML_NAME = '<img src=x onerror="window.__xss=1">.png'

SERVER_START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gigavision_executable() -> str:
    """The `gigavision` console script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("gigavision")
    if beside.exists():
        return str(beside)
    found = shutil.which("gigavision")
    if found is None:
        pytest.fail("the `gigavision` console script is not installed (pip install -e .)")
    return found


def get_json(url: str, timeout: float = 10.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


def wait_until_healthy(base_url: str, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    """Polls GET /healthz until it answers 200; fails early if the server process exits."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            output = log.read_text(errors="replace")[-4000:] if log else ""
            pytest.fail(f"`gigavision serve` exited with {proc.returncode} before it was ready:\n{output}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = str(exc)
        # Short pause between polls (doubles as a check that the process is still alive).
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
        else:
            time.sleep(0.2)
    pytest.fail(f"{base_url}/healthz not ready after {SERVER_START_TIMEOUT_S:.0f}s: {last_error}")


@contextlib.contextmanager
def run_server(workspace: Path, log: Path) -> Iterator[str]:
    """Starts `gigavision -w WORKSPACE serve` on a free loopback port; yields its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = [gigavision_executable(), "-w", str(workspace), "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until_healthy(base_url, proc, log)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def make_html_named_image(directory: Path) -> Path:
    """A small real photograph saved under a file name that is HTML."""
    from PIL import Image
    from skimage import data

    path = directory / HTML_NAME
    Image.fromarray(data.astronaut()).save(path, format="PNG")
    return path


@dataclass
class ServerInfo:
    base_url: str
    images: list[dict[str, Any]]


def list_all_images(base_url: str) -> list[dict[str, Any]]:
    page = get_json(f"{base_url}/api/v1/images?offset=0&limit=500")
    assert isinstance(page, dict), page
    return list(page["items"])


@pytest.fixture(scope="session")
def browser_workspace(tmp_path_factory: pytest.TempPathFactory, gigapixel_tiff: Path) -> Path:
    import gigavision as gv

    root = tmp_path_factory.mktemp("browser")
    workspace = root / "workspace"
    inputs = root / "inputs"
    inputs.mkdir()
    ws = gv.init_workspace(workspace)
    try:
        results = ws.ingest([gigapixel_tiff, make_html_named_image(inputs)])
    finally:
        ws.close()
    refused = [r for r in results if r.status not in ("added", "duplicate")]
    assert not refused, refused
    return workspace


@pytest.fixture(scope="session")
def gigavision_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    external = os.environ.get("GIGAVISION_BROWSER_BASE_URL")
    if external:
        base_url = external.rstrip("/")
        wait_until_healthy(base_url, None, None)
        yield ServerInfo(base_url, list_all_images(base_url))
        return

    import gigavision

    index = Path(gigavision.__file__).parent / "server" / "static" / "index.html"
    if not index.is_file():
        pytest.fail(f"the web front end is not built ({index} is missing): run `make web`")
    workspace: Path = request.getfixturevalue("browser_workspace")
    log = tmp_path_factory.mktemp("server-log") / "serve.log"
    with run_server(workspace, log) as base_url:
        yield ServerInfo(base_url, list_all_images(base_url))


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        message = "Debian's chromium is not installed (apt-get install chromium; `make test` does it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[Page]:
    """A fresh 1280 × 800 tab (20 s default timeout); the test fails if the page threw an uncaught error.
    Modules that also watch the console or responses define their own."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    context.close()
    assert errors == []


@pytest.fixture(scope="session")
def html_image_name() -> str:
    return HTML_NAME

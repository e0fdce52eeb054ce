"""The wheel in a core-only venv: ``pip install gigavision`` without any extra is a working product.

Builds the wheel from a copy of the sources (or takes ``GIGAVISION_WHEEL``: a ``.whl`` file or a folder such
as ``dist/`` holding one), installs it in a fresh venv with only its core dependencies, pinned to
``requirements.lock``'s versions through a constraints file (no hashes: the lock covers ``[all,dev]``), plus
pytest for the smoke run. Then, in that venv: torch and the other extras are absent; ``gigavision init``,
``ingest`` of a real image, ``serve`` answering ``/healthz``, the viewer, a IIIF tile and the image list; a
command that needs an extra exits 2 naming it; and the core test modules pass against the installed wheel.

pip installs with this machine's pip configuration (its local find-links / indexes and cache; packages the
lock pins that only the default index has come from there). Slow (a venv and a few hundred MB of wheels):
``pytest -m slow tests/test_wheel.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# Modules of extras that must be absent from the core install (gigavision.extras.EXTRAS lists them all).
EXTRA_MODULES = ("torch", "torchvision", "lightning", "timm", "onnxruntime", "optuna", "distributed", "psycopg")
# Core test modules run against the installed wheel: ingest, tiles/IIIF, annotations, formats, datasets, QC.
CORE_TESTS = (
    "tests/test_ingest.py",
    "tests/test_iiif.py",
    "tests/test_annotation_store.py",
    "tests/test_formats.py",
    "tests/test_datasets.py",
    "tests/test_quality.py",
)
TEST_TOOLS = ("pytest", "pytest-timeout", "httpx")  # for the smoke run; versions from the lock too


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    return done


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{' '.join(done.args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _constraints(path: Path) -> Path:
    """``name==version`` of every package in the hash-pinned lock, without hashes or markers."""
    pins = [m.group(0) for m in re.finditer(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+", LOCK.read_text(), re.MULTILINE)]
    assert pins, f"no pins found in {LOCK}"
    path.write_text("\n".join(pins) + "\n")
    return path


def _wheel(tmp: Path, env: dict[str, str]) -> Path:
    given = os.environ.get("GIGAVISION_WHEEL")
    if given:
        path = Path(given)
        found = sorted(path.glob("gigavision-*.whl")) if path.is_dir() else [path]
        assert found and found[-1].is_file(), f"GIGAVISION_WHEEL={given}: no gigavision-*.whl there"
        return found[-1]
    if not (ROOT / "src/gigavision/server/static/index.html").is_file():
        pytest.fail("the viewer is not built: run `make web` (or `make dist` and GIGAVISION_WHEEL=dist)")
    # build from a copy: no build/ or egg-info appears in the working tree other tests run in
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp / "wheelhouse"
    _ok(_run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(out), "."], env, source))
    (wheel,) = out.glob("gigavision-*.whl")
    return wheel


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """(venv bin folder, environment) of a fresh venv with the wheel and only its core dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    wheel = _wheel(tmp, base)
    venv = tmp / "venv"
    _ok(_run([sys.executable, "-m", "venv", str(venv)], base, tmp))
    bin_dir = venv / "bin"
    env = {**base, "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}", "PIP_NO_INPUT": "1"}
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "-c", str(_constraints(tmp / "constraints.txt"))]
    _ok(_run([*pip, str(wheel), *TEST_TOOLS], env, tmp))
    size = _run(["du", "-sh", str(venv)], env, tmp).stdout.split()[0]
    print(f"\ncore venv: {size}, built and installed in {time.monotonic() - started:.0f} s from {wheel.name}")
    yield bin_dir, env


def test_the_core_venv_has_no_extra_and_runs_the_product(
    core_venv: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    bin_dir, env = core_venv
    py, gv = str(bin_dir / "python"), str(bin_dir / "gigavision")
    assert _run([py, "-c", "import torch"], env, tmp_path).returncode != 0
    probe = f"import importlib.util as u, json; print(json.dumps([m for m in {EXTRA_MODULES!r} if u.find_spec(m)]))"
    assert json.loads(_ok(_run([py, "-c", probe], env, tmp_path))) == []
    where = _ok(_run([py, "-c", "import gigavision; print(gigavision.__file__)"], env, tmp_path))
    assert str(bin_dir.parent) in where, where  # the installed wheel, not the source tree

    ws = tmp_path / "ws"
    _ok(_run([gv, "init", str(ws)], env, tmp_path))
    image = tmp_path / "astronaut.png"
    write = f"import skimage.data, PIL.Image; PIL.Image.fromarray(skimage.data.astronaut()).save({str(image)!r})"
    _ok(_run([py, "-c", write], env, tmp_path))
    ingested = json.loads(_ok(_run([gv, "-w", str(ws), "ingest", str(image), "--json"], env, tmp_path)))
    image_id = ingested["images"][0]["id"]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [gv, "-w", str(ws), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # poll /healthz until the server answers (or has died, or the deadline passed)
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, f"gigavision serve exited {server.returncode}: {server.stderr.read()}"  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "gigavision serve did not answer /healthz within 120 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/", timeout=30) as r:
            assert r.status == 200 and "<html" in r.read().decode().lower()
        with urllib.request.urlopen(f"{base}/iiif/3/{image_id}/full/256,/0/default.jpg", timeout=30) as r:
            assert r.headers["content-type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"
        with urllib.request.urlopen(f"{base}/api/v1/images", timeout=30) as r:
            assert [i["id"] for i in json.load(r)["items"]] == [image_id]
    finally:
        server.terminate()
        server.wait(timeout=30)

    done = _run([gv, "-w", str(ws), "train", "classify", "--dataset", "x@1"], env, tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "error: gigavision train needs the 'train' extra (torch is not installed): pip install 'gigavision[train]'\n"
    )
    assert not any((ws / "models").iterdir())


def test_the_core_tests_pass_against_the_installed_wheel(core_venv: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = core_venv
    select = ["-m", "not slow and not postgres and not browser", "-k", "not postgresql"]
    cmd = [str(bin_dir / "python"), "-m", "pytest", "-q", *select, *CORE_TESTS]
    done = _run(cmd, env, ROOT, timeout=1800)
    assert done.returncode == 0, f"core tests failed in the core venv:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    print(f"\ncore tests in the core venv: {done.stdout.strip().splitlines()[-1]}")

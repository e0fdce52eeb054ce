"""The wheel in a core-only venv: ``pip install gigavision`` without any extra is a working product.

Builds the wheel from a copy of the sources (or takes ``GIGAVISION_WHEEL``: a ``.whl`` file or a folder such
as ``dist/`` holding one) and installs it, with ``pip install --no-deps --no-index``, in a fresh venv. Its
dependencies are not downloaded: the distributions of the dependency closure of the wheel's core requirements
(``Requires-Dist`` without extras, markers evaluated; extras such as ``uvicorn[standard]`` followed) plus the
test tools are taken from the venv running this test (installed from ``requirements.lock``, so lock-pinned)
and exposed in the new venv's site-packages by symlinks to every top-level entry their RECORD lists. No other
distribution of that venv is linked. ``pip check`` in the new venv proves the closure complete. Then, in that
venv: torch and the other extras are absent; ``gigavision init``, ``ingest`` of a real image, ``serve``
answering ``/healthz``, the viewer, a IIIF tile and the image list; a command that needs an extra exits 2
naming it; every module outside the training code imports; and the core test modules of tiles, the annotation
store and QC pass against the installed wheel.

Nothing is fetched from the network. Slow (a wheel build and the core tests in a subprocess):
``pytest -m slow tests/test_wheel.py``.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

# one worker under `-n 2`: the core venv (a wheel build and a venv, ~1 min) is made once for the module
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("core-venv")]

ROOT = Path(__file__).resolve().parents[1]
# Modules of extras that must be absent from the core install (gigavision.extras.EXTRAS lists them all).
EXTRA_MODULES = ("torch", "torchvision", "lightning", "timm", "onnxruntime", "optuna", "distributed", "psycopg")
# Core test modules run against the installed wheel: tiles/IIIF, the annotation store, QC (~25 s of CPU). The
# other core modules (ingest, formats, datasets: ~115 s more) are not re-run here: every module of the installed
# package is imported instead (``test_every_core_module_imports``), which is what a core install can break, and
# the product check above ingests and serves a real image.
CORE_TESTS = (
    "tests/test_iiif.py",
    "tests/test_annotation_store.py",
    "tests/test_quality.py",
)
# The only modules that may need an extra: the networks, their export and the trainer (``train`` extra).
EXTRA_ONLY = (
    "gigavision.models.backbones",
    "gigavision.models.nets.",
    "gigavision.models.onnx_export",
    "gigavision.train.",
)
# For the smoke run: pytest and its timeout plugin, httpx for TestClient, filelock for conftest's cached fixtures.
TEST_TOOLS = ("pytest", "pytest-timeout", "httpx", "filelock")
# Timeouts with room for a loaded 2-core runner (pyproject's global 300 s is not the budget here): the core venv
# (wheel build included, ~10 s) and the product checks take ~15 s, the core tests ~25 s on an idle one.
TIMEOUT_PRODUCT = 360  # includes the module's core_venv fixture, set up by the first test
TIMEOUT_CORE_TESTS = 480
# This test's venv (the lock-pinned .venv of `make install`): where the core venv's dependencies come from.
DEV_SITE = Path(sysconfig.get_path("purelib"))


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    return done


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{' '.join(done.args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


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


def _core_requirements(wheel: Path) -> list[str]:
    """The wheel's ``Requires-Dist`` entries that apply without any extra."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(zf.read(name).decode())
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    core = [str(r) for r in requires if r.marker is None or r.marker.evaluate({"extra": ""})]
    assert core, f"{wheel.name} has no core Requires-Dist"
    return core


def _closure(roots: Iterable[str], site: Path) -> dict[NormalizedName, importlib.metadata.Distribution]:
    """The distributions installed in ``site`` that ``roots`` need, transitively (each requirement's extras
    followed, markers evaluated in this interpreter's environment); a missing one fails the test."""
    installed: dict[NormalizedName, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    needed: dict[NormalizedName, importlib.metadata.Distribution] = {}
    done: set[tuple[NormalizedName, frozenset[str]]] = set()
    todo = [(Requirement(r), "the wheel") for r in roots]
    while todo:
        req, wanted_by = todo.pop()
        name, extras = canonicalize_name(req.name), frozenset(canonicalize_name(e) for e in req.extras)
        if (name, extras) in done:
            continue
        done.add((name, extras))
        dist = installed.get(name)
        assert dist is not None, f"{req} (needed by {wanted_by}) is not installed in {site}: run `make install`"
        assert req.specifier.contains(dist.version, prereleases=True), f"{name} {dist.version} does not fit {req}"
        needed[name] = dist
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((sub, f"{name}{sorted(extras) if extras else ''}"))
    return needed


def _top_level(dist: importlib.metadata.Distribution) -> set[str]:
    """The entries of site-packages that ``dist``'s RECORD lists files under (scripts in ../bin and the shared
    __pycache__ left out)."""
    files = dist.files
    assert files is not None, f"{dist.metadata['Name']} has no RECORD: cannot tell its files"
    return {f.parts[0] for f in files if f.parts[0] not in ("..", "__pycache__")}


def _link_closure(needed: dict[NormalizedName, importlib.metadata.Distribution], site: Path, target: Path) -> None:
    """Symlink into ``target`` every top-level entry of ``site`` that the ``needed`` distributions own. An entry
    that two distributions share (a namespace package: linking it would show the other's files too), or that
    ``target`` already has, fails the test."""
    owners: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        for entry in _top_level(dist):
            owners.setdefault(entry, set()).add(canonicalize_name(dist.metadata["Name"]))
    for name, dist in sorted(needed.items()):
        for entry in sorted(_top_level(dist)):
            shared = owners[entry] - {name}
            assert not shared, f"{site / entry} belongs to {name} and to {', '.join(sorted(shared))}"
            source, link = site / entry, target / entry
            assert source.exists(), f"{source} (in the RECORD of {name}) does not exist"
            assert not link.exists() and not link.is_symlink(), f"{link} (of {name}) is already in the core venv"
            link.symlink_to(source)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """(venv bin folder, environment) of a fresh venv with the wheel and only its core dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    started = time.monotonic()
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    base = {k: v for k, v in base.items() if not k.startswith("PIP_")}  # this machine's pip settings stay out
    wheel = _wheel(tmp, base)
    venv = tmp / "venv"
    _ok(_run([sys.executable, "-m", "venv", str(venv)], base, tmp))  # pip comes from ensurepip's bundled wheel
    bin_dir = venv / "bin"
    env = {
        **base,
        "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    pip = [str(bin_dir / "python"), "-m", "pip"]
    _ok(_run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], env, tmp))
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    assert site.is_dir(), f"no site-packages at {site}"
    needed = _closure([*_core_requirements(wheel), *TEST_TOOLS], DEV_SITE)
    _link_closure(needed, DEV_SITE, site)
    _ok(_run([*pip, "check"], env, tmp))  # every requirement of every distribution there is met: the closure is whole
    print(
        f"\ncore venv: {wheel.name} installed, {len(needed)} distributions linked from {DEV_SITE} "
        f"in {time.monotonic() - started:.0f} s"
    )
    yield bin_dir, env


@pytest.mark.timeout(TIMEOUT_PRODUCT)
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


@pytest.mark.timeout(TIMEOUT_CORE_TESTS)
def test_the_core_tests_pass_against_the_installed_wheel(core_venv: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = core_venv
    select = ["-m", "not slow and not postgres and not browser", "-k", "not postgresql"]
    cmd = [str(bin_dir / "python"), "-m", "pytest", "-q", *select, *CORE_TESTS]
    done = _run(cmd, env, ROOT, timeout=TIMEOUT_CORE_TESTS - 60)  # killed before the marker fires
    assert done.returncode == 0, f"core tests failed in the core venv:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    print(f"\ncore tests in the core venv: {done.stdout.strip().splitlines()[-1]}")


# Imports every module of the installed package; prints {module: "Error: message"} for those that fail.
_IMPORT_ALL = """
import importlib, json, pkgutil, gigavision
failed = {}
for m in pkgutil.walk_packages(gigavision.__path__, "gigavision."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed[m.name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


@pytest.mark.timeout(TIMEOUT_PRODUCT)
def test_every_core_module_imports(core_venv: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """A module-level import of torch (or any extra) outside the training code would break ``pip install
    gigavision`` for every command that loads it; the main suite, with every extra installed, cannot see it."""
    bin_dir, env = core_venv
    failed = json.loads(_ok(_run([str(bin_dir / "python"), "-c", _IMPORT_ALL], env, tmp_path)))
    core = {m: e for m, e in failed.items() if not m.startswith(EXTRA_ONLY)}
    assert not core, f"core modules that do not import without extras: {core}"
    missing = {m: e for m, e in failed.items() if not e.startswith("ModuleNotFoundError: No module named")}
    assert not missing, f"modules failing for another reason than a missing extra: {missing}"
    assert any(m.startswith("gigavision.train.") for m in failed)  # the probe sees the extras as absent

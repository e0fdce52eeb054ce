"""requirements.lock is what every install uses (`make install`, CI): it must say what pyproject.toml asks for.

`make lock` regenerates it; these tests fail, naming the packages, while the two disagree.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "gigavision"


@dataclass
class Pin:
    version: Version
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Pin]:
    """pip-compile's output: `name==version \\`, `--hash=sha256:…` lines, then `# via` annotations."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in text.splitlines():
        head = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if head:
            current = pins[canonicalize_name(head.group(1))] = Pin(Version(head.group(2)))
            in_via = False
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            current.hashes += 1
        elif current is not None and line.startswith("    # via"):
            rest = line.removeprefix("    # via").strip()
            in_via = not rest
            if rest:
                current.via.add(rest)
        elif current is not None and in_via and line.startswith("    #   "):
            current.via.add(line.removeprefix("    #   ").strip())
        elif line and not line.startswith(" "):
            in_via = False
    return pins


def project_requirements(pyproject: dict[str, object]) -> list[Requirement]:
    """The core dependencies and every extra (self-references like `gigavision[train]` expanded)."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    wanted = [Requirement(r) for r in project["dependencies"]]
    for rows in extras.values():
        wanted += [r for r in map(Requirement, rows) if canonicalize_name(r.name) != PROJECT]
    return [r for r in wanted if r.marker is None or r.marker.evaluate({"extra": ""})]


def lock_problems(pyproject: dict[str, object], lock_text: str) -> list[str]:
    pins = parse_lock(lock_text)
    problems = []
    direct = set()
    for req in project_requirements(pyproject):
        name = canonicalize_name(req.name)
        direct.add(name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{name}: pyproject.toml asks for {req}, the lock has no pin")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{name}: pyproject.toml asks for {req}, the lock pins {pin.version}")
    for name, pin in sorted(pins.items()):
        if any(v.startswith(f"{PROJECT} (pyproject.toml)") for v in pin.via) and name not in direct:
            problems.append(f"{name}: pinned as a direct dependency, but pyproject.toml no longer asks for it")
        if pin.hashes == 0:
            problems.append(f"{name}: pinned without a hash (installs use --require-hashes)")
        if name == PROJECT:
            problems.append(f"{name}: the project itself is in the lock")
    return problems


def test_the_lock_pins_what_pyproject_asks_for() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    problems = lock_problems(pyproject, (ROOT / "requirements.lock").read_text())
    assert not problems, "requirements.lock is out of date with pyproject.toml; run `make lock`:\n" + "\n".join(
        problems
    )


def test_the_lock_holds_the_build_backend_and_the_cached_torch() -> None:
    """`pip install --no-build-isolation -e .` builds with the lock's setuptools; torch is the cached build."""
    pins = parse_lock((ROOT / "requirements.lock").read_text())
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in map(Requirement, build):
        assert canonicalize_name(req.name) in pins, f"build requirement {req} is not in the lock"
        assert req.specifier.contains(pins[canonicalize_name(req.name)].version)
    assert str(pins["torch"].version) == "2.14.1" and str(pins["torchvision"].version) == "0.29.1"


def test_a_stale_lock_names_the_packages_that_differ() -> None:
    lock = """\
numpy==1.25.0 \\
    --hash=sha256:aa
    # via gigavision (pyproject.toml)
oldpkg==1.0 \\
    --hash=sha256:bb
    # via
    #   gigavision (pyproject.toml)
    #   other
nohash==2.0
    # via numpy
"""
    pyproject = {"project": {"dependencies": ["numpy>=1.26", "pillow>=10"], "optional-dependencies": {}}}
    problems = lock_problems(pyproject, lock)
    assert problems == [
        "numpy: pyproject.toml asks for numpy>=1.26, the lock pins 1.25.0",
        "pillow: pyproject.toml asks for pillow>=10, the lock has no pin",
        "nohash: pinned without a hash (installs use --require-hashes)",
        "oldpkg: pinned as a direct dependency, but pyproject.toml no longer asks for it",
    ]

"""The import layering of docs/architecture.md holds: import-linter checks the contract in pyproject.toml.

A lower layer importing an upper one (say `images` importing `server`, or `models` importing `train`) fails
here with the import chain and its line, so the layering cannot erode one convenient import at a time."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_flow_downward(tmp_path: Path) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-logo", "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_every_top_level_module_has_a_layer() -> None:
    """The contract is exhaustive and names real modules, so it checks every package we ship."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (contract,) = config["contracts"]
    assert contract["exhaustive"] is True
    declared = {name.strip() for layer in contract["layers"] for name in layer.replace("|", ":").split(":")}
    package = ROOT / "src" / "gigavision"
    shipped = {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }
    assert shipped == declared

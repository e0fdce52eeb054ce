"""Optional extras: a feature whose extra is missing says which one to install, and writes nothing.

A missing extra is simulated with ``sys.modules[name] = None`` (the full core-only install is
``tests/test_wheel.py``). Also the start-up guard: the CLI's commands and the server load no heavy library
they do not use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision import extras
from gigavision.cli.main import main
from gigavision.errors import MissingDependency, MissingExtra
from gigavision.server.main import create_app


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _nothing_written(ws_path: Path) -> None:
    from sqlalchemy import func, select

    from gigavision.store.schema import JobRow

    ws = gv.open_workspace(ws_path)
    try:
        with ws.session() as s:
            assert s.scalar(select(func.count()).select_from(JobRow)) == 0
    finally:
        ws.close()
    assert not any((ws_path / "models").iterdir())
    assert not (ws_path / "runs").exists() or not any((ws_path / "runs").iterdir())


def test_require_names_the_extra_and_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "torch")
    assert extras.missing("train", "torch") == ["torch"]
    with pytest.raises(MissingExtra) as caught:
        extras.require("train", feature="gigavision train")
    exc = caught.value
    assert isinstance(exc, MissingDependency)
    assert (exc.extra, exc.module, exc.code, exc.http_status) == ("train", "torch", "missing_extra", 501)
    install = "pip install 'gigavision[train]'"
    assert str(exc) == f"gigavision train needs the 'train' extra (torch is not installed): {install}"
    extras.require("train", "safetensors", feature="x")  # installed in the dev venv: no error
    with pytest.raises(KeyError, match="does not provide"):
        extras.require("onnx", "torch", feature="x")
    with pytest.raises(KeyError, match="unknown extra"):
        extras.missing("gpu")


def test_an_import_error_past_require_maps_to_the_smallest_extra() -> None:
    found = extras.from_import_error(ModuleNotFoundError("no onnxruntime", name="onnxruntime.capi"), "predict")
    assert found is not None and found.extra == "onnx"
    assert extras.from_import_error(ModuleNotFoundError("x", name="distributed"), "f").extra == "dask"  # type: ignore[union-attr]
    assert extras.from_import_error(ModuleNotFoundError("x", name="not_ours"), "f") is None
    assert extras.from_import_error(ImportError("cannot import name"), "f") is None


def test_service_urls_name_their_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gigavision.config import load_settings
    from gigavision.jobs.queue import make_huey
    from gigavision.store.db import make_engine

    _hide(monkeypatch, "psycopg", "redis")
    with pytest.raises(MissingExtra, match=r"db_url = postgresql://… needs the 'postgres' extra \(psycopg"):
        make_engine("postgresql://127.0.0.1:5432/x")
    gv.init_workspace(tmp_path / "ws").close()
    settings = load_settings(tmp_path / "ws", queue_url="redis://127.0.0.1:6379/0")
    with pytest.raises(MissingExtra, match=r"queue_url = redis://… needs the 'redis' extra"):
        make_huey(settings, lambda job_id: None)


@pytest.mark.parametrize(
    ("args", "hidden", "extra", "feature"),
    [
        (["train", "classify", "--dataset", "x@1"], ("torch",), "train", "gigavision train"),
        (["sweep", "classify", "--dataset", "x@1"], ("optuna",), "train", "gigavision sweep"),
        (["evaluate", "m", "--dataset", "x@1"], ("torch",), "train", "gigavision evaluate"),
        (["predict", "m", "a.png", "--runtime", "onnx"], ("onnxruntime",), "onnx", "gigavision predict --runtime onnx"),
        (["predict", "m", "a.png", "--runtime", "torch"], ("torch",), "train", "gigavision predict --runtime torch"),
        (["predict", "m", "a.png", "--dask", "local"], ("distributed",), "dask", "gigavision predict --dask"),
    ],
)
def test_cli_without_the_extra_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    hidden: tuple[str, ...],
    extra: str,
    feature: str,
) -> None:
    ws = tmp_path / "ws"
    gv.init_workspace(ws).close()
    capsys.readouterr()
    _hide(monkeypatch, *hidden)
    code = main(["-w", str(ws), *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: {feature} needs the {extra!r} extra (")
    assert err.rstrip().endswith(f"pip install 'gigavision[{extra}]'")
    _nothing_written(ws)


def test_rest_without_the_extra_is_501_missing_extra_and_the_server_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = gv.init_workspace(tmp_path / "ws")
    try:
        with TestClient(create_app(ws)) as client:
            _hide(monkeypatch, "torch")
            r = client.post("/api/v1/models/train", json={"task": "classify", "dataset": "x@1"})
            assert r.status_code == 501
            error = r.json()["error"]
            assert error["code"] == "missing_extra"
            assert "'train' extra" in error["message"] and "pip install 'gigavision[train]'" in error["message"]
            r = client.post("/api/v1/models/m/evaluate", json={"dataset": "x@1"})
            assert r.status_code == 501 and r.json()["error"]["code"] == "missing_extra"
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/v1/jobs").json()["items"] == []
    finally:
        ws.close()


# -- start-up: what each entry point imports ---------------------------------------------------------------
HEAVY = ("torch", "torchvision", "lightning", "timm", "onnxruntime", "optuna", "distributed", "psycopg", "redis")


def _loaded(code: str) -> set[str]:
    """Top-level modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_cli_and_the_server_start_without_any_extra(tmp_path: Path) -> None:
    loaded = _loaded("import gigavision.cli.main, gigavision.server.main, gigavision.workspace")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_listing_images_loads_neither_numpy_nor_alembic(tmp_path: Path) -> None:
    """``gigavision images list`` on a migrated workspace: the database and the table, nothing else heavy."""
    ws = tmp_path / "ws"
    gv.init_workspace(ws).close()
    loaded = _loaded(
        "import contextlib, io\nfrom gigavision.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['-w', {str(ws)!r}, 'images', 'list']) == 0"
    )
    slow = {"numpy", "alembic", "skimage", "sklearn", "pyvips", "fastapi", "shapely", "fsspec", *HEAVY}
    assert not loaded & slow, loaded & slow

"""Shared fixtures: real bundled images, a generated gigapixel slide, workspaces on SQLite and PostgreSQL.

PostgreSQL tests run against 127.0.0.1:5432 (trust auth). Under CI=true an unreachable server fails the
run instead of skipping, so the PostgreSQL path is always exercised in CI.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import gigavision as gv
from gigavision.datasets.versions import DatasetVersion
from gigavision.demo import bundled_images, make_slide
from gigavision.models.store import ModelInfo
from tests.seeding import TRAIN_SEED, TRAINED, trained

PG_ADMIN = os.environ.get("GIGAVISION_TEST_PG", "postgresql://127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- one intra-op thread for the whole run ---------------------------------------------------------------
# Float reductions split over threads sum in another order, so a model trained with 2 threads differs from
# one trained with 8: a fixed count makes every training fixture come out bit-identical on any machine
# (with the seeds and torch's deterministic algorithms the trainer sets). One, because on a shared 2-core
# runner OpenMP threads spinning against other processes made training 4x slower (300 s instead of 70 s),
# while one thread is within 1.5x of two on an idle machine. The variables reach subprocesses that train.
TEST_THREADS = 1


def pytest_configure(config: pytest.Config) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(TEST_THREADS)
    # Throwaway workspaces: no fsync (files still appear whole, so the kill tests hold; gigavision/files.py).
    # GIGAVISION_FSYNC=1 make test runs the suite with every sync on.
    os.environ.setdefault("GIGAVISION_FSYNC", "0")
    # Starlette's TestClient sends `Host: testserver`, which the app's Host check (server/boundary.py) refuses
    # like any name it was not configured for; tests/test_boundary.py passes its own [server] settings.
    os.environ.setdefault("GIGAVISION_SERVER__ALLOWED_HOSTS", '["testserver"]')
    try:
        import torch
    except ImportError:  # the core install has no torch (tests/test_wheel.py runs the core tests there)
        return
    torch.set_num_threads(TEST_THREADS)


SCENE_GROUP = "trained-scenes"


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under `pytest -n 2 --dist loadgroup` (make test) the tests that use the session's trained scene models
    run on one worker, so each model is trained once per run (marked as collected: before xdist's
    collection_modifyitems hook turns the marks into groups)."""
    if {"scenes_detector", "scenes_segmenter"} & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.xdist_group(SCENE_GROUP))


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)  # an xdist worker: hand the list to the controller
    if output is not None:
        output["trained"] = TRAINED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    TRAINED.extend(tuple(row) for row in getattr(node, "workeroutput", {}).get("trained", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What every trained model reached, and its weights' hash: two runs of one lock print the same lines."""
    if TRAINED:
        terminalreporter.section(f"trained models (seed {TRAIN_SEED}, {TEST_THREADS} thread)")
        for name, model_id, headline, value, digest in sorted(TRAINED):
            terminalreporter.write_line(f"{name:24} {model_id:28} {headline}={value!r:22} weights={digest}")


# -- no network: tests only talk to this machine ---------------------------------------------------------
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else None
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(f"tests must not reach the network (tried {host})")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(autouse=True, scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A new, empty SQLite workspace database starts as a copy of one database migrated once per worker
    (sqlite3's online backup into the engine's own connection) instead of running every Alembic migration
    again: 0.06-0.16 s per workspace, about 65 s of the suite's CPU. Databases that hold anything (a test
    migrating from an old revision) and PostgreSQL take the real ``migrate``, which also built the template."""
    import sqlite3

    from gigavision.store import db

    template = tmp_path_factory.mktemp("schema") / "template.db"
    engine = db.make_engine(f"sqlite:///{template}")
    db.migrate(engine)
    engine.dispose()
    real = db.migrate

    def migrate(engine: Any) -> None:
        if engine.url.get_backend_name() == "sqlite" and engine.url.database:
            raw = engine.raw_connection()
            try:
                target = raw.driver_connection
                if target.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    with sqlite3.connect(template) as source:
                        source.backup(target)
                    return
            finally:
                raw.close()
        real(engine)

    patch = pytest.MonkeyPatch()
    patch.setattr("gigavision.workspace.migrate", migrate)
    yield
    patch.undo()


# -- data ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fixture_cache(request: pytest.FixtureRequest) -> Path:
    """A folder that survives between runs (pytest's cache), for fixtures that are slow to build."""
    return Path(request.config.cache.mkdir("gigavision-fixtures"))


@contextmanager
def building(fixture_cache: Path) -> Iterator[None]:
    """Builders of cached fixtures take turns: two xdist workers must not write the same file at once (the
    second finds it built and reuses it)."""
    from filelock import FileLock

    with FileLock(str(fixture_cache / ".building.lock")):
        yield


@pytest.fixture(scope="session")
def samples(fixture_cache: Path) -> dict[str, Path]:
    """scikit-image's real photographs and scans written as ordinary files, by file name."""
    with building(fixture_cache):
        return {p.name: p for p in bundled_images(fixture_cache / "samples")}


@pytest.fixture(scope="session")
def gigapixel_tiff(fixture_cache: Path) -> Path:
    """A 40,000 × 25,000 (1 gigapixel) pyramidal JPEG TIFF of real IHC texture at 0.25 µm/px."""
    with building(fixture_cache):
        return make_slide(fixture_cache / "ihc_slide_40000x25000.tif", 40_000, 25_000, mpp=0.25)


# -- databases -----------------------------------------------------------------------------------------
def _pg_available() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except Exception as exc:
        return str(exc).strip().splitlines()[0]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import psycopg

    problem = _pg_available()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_ADMIN} is required under CI=true: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"gv_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test using this runs on SQLite and on PostgreSQL (empty tables per test)."""
    if request.param == "sqlite":
        yield ""
        return
    import psycopg

    url: str = request.getfixturevalue("postgres_url")
    yield url
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        _clean_schema(conn)


def _clean_schema(conn: Any) -> None:
    """Empty every table of a schema the test left at the migrations' heads (the next test's workspace then
    skips the migrations: 0.07 s per test instead of 0.2 s); drop the schema when the test changed it otherwise."""
    from gigavision.store.db import _script_heads

    tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    at_heads = (
        "alembic_version" in tables
        and {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")} == _script_heads()
    )
    if at_heads:
        data = [f'"{t}"' for t in tables if t != "alembic_version"]
        if data:
            conn.execute(f"TRUNCATE {', '.join(data)} RESTART IDENTITY CASCADE")
        return
    _drop_schema(conn)


def _drop_schema(conn: Any) -> None:
    conn.execute("DROP SCHEMA public CASCADE")
    conn.execute("CREATE SCHEMA public")


def empty_postgres_schema(url: str) -> None:
    """Drop every table of the PostgreSQL database ``url`` (a test that migrates from nothing needs it: the
    ``db_url`` fixture leaves the migrated tables, emptied, for the next test)."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        _drop_schema(conn)


@pytest.fixture
def workspace(tmp_path: Path, db_url: str) -> Iterator[gv.Workspace]:
    ws = gv.init_workspace(tmp_path / "ws", db_url=db_url)
    yield ws
    ws.close()


@pytest.fixture
def sqlite_workspace(tmp_path: Path) -> Iterator[gv.Workspace]:
    ws = gv.init_workspace(tmp_path / "ws")
    yield ws
    ws.close()


# -- trained models, shared by the training acceptance tests and the inference tests ----------------------
@dataclass(frozen=True)
class Trained:
    ws: gv.Workspace
    version: DatasetVersion
    info: ModelInfo


DETECT_SIZE = 128
DETECT_RECIPE = {
    "task": "detect",
    "dataset": "scenes",
    "image_size": DETECT_SIZE,
    "epochs": 20,
    "batch_size": 16,
    "lr": 3e-3,
    "seed": TRAIN_SEED,
}
SEGMENT_SIZE = 64
SEGMENT_CLASSES = ("coin", "horse")  # at 64 px the digits' strokes are 2-3 px wide: too few CPU epochs
SEGMENT_RECIPE = {
    "task": "segment",
    "dataset": "scenes",
    "arch": "linknet:resnet18",
    "image_size": SEGMENT_SIZE,
    "epochs": 10,
    "batch_size": 8,
    "lr": 3e-3,
    "seed": TRAIN_SEED,
}


@pytest.fixture(scope="session")
def scenes_detector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """fcos_tiny trained on 200 pasted-object scenes (about a minute on one CPU thread)."""
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train
    from tests.scenes import scenes_version

    root = tmp_path_factory.mktemp("detector")
    ws = gv.init_workspace(root / "ws")
    version = scenes_version(ws, root / "src", n=200, size=DETECT_SIZE, seed=0)
    info = trained("scenes_detector", train(ws, load_recipe(overrides=DETECT_RECIPE)))
    yield Trained(ws, version, info)
    ws.close()


@pytest.fixture(scope="session")
def scenes_segmenter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A LinkNet trained on 60 coin/horse scenes at 64 px."""
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train
    from tests.scenes import scenes_version

    root = tmp_path_factory.mktemp("segmenter")
    ws = gv.init_workspace(root / "ws")
    version = scenes_version(ws, root / "scenes", n=60, size=SEGMENT_SIZE, seed=0, classes=SEGMENT_CLASSES)
    info = trained("scenes_segmenter", train(ws, load_recipe(overrides=SEGMENT_RECIPE), model_id="scenes-linknet"))
    yield Trained(ws, version, info)
    ws.close()

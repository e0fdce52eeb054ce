"""Blob store (local and fsspec memory://), migrations, database settings, workspace settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

import gigavision as gv
from gigavision.config import load_settings
from gigavision.errors import ConfigError, InvalidInput
from gigavision.store.blobs import BlobStore, blob_key, sha256_file
from gigavision.store.db import make_engine, migrate


@pytest.mark.parametrize("url", ["local", "memory://gv-test-blobs"])
def test_blob_store_round_trip(url: str, tmp_path: Path, samples: dict[str, Path]) -> None:
    store = BlobStore(str(tmp_path / "blobs") if url == "local" else url, cache_dir=tmp_path / "cache")
    src = samples["retina.jpg"]
    sha = sha256_file(src)
    assert sha == hashlib.sha256(src.read_bytes()).hexdigest()
    key = blob_key(sha, ".JPG")
    assert key == f"{sha[:2]}/{sha}.jpg"
    assert store.put_file(src, key) is True
    assert store.put_file(src, key) is False  # content-addressed: stored once
    assert store.exists(key) and store.keys() == [key]
    local = store.local_path(key)
    assert local.read_bytes() == src.read_bytes()
    if url != "local":
        assert local.is_relative_to(tmp_path / "cache")
    store.delete(key)
    assert not store.exists(key)


def test_blob_keys_are_checked(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "blobs"))
    for bad in ("../escape", "/etc/passwd", "ab/../../x", "a\x00b", ""):
        with pytest.raises(InvalidInput):
            store.exists(bad)
    with pytest.raises(InvalidInput):
        blob_key("not-a-hash")
    assert blob_key("a" * 64, ".tif/../x") == "aa/" + "a" * 64  # a hostile suffix is dropped


def test_local_put_is_atomic_on_failure(
    tmp_path: Path, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(str(tmp_path / "blobs"))
    key = blob_key(sha256_file(samples["coins.png"]), ".png")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put_file(samples["coins.png"], key)
    assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []


def test_migrations_are_idempotent_on_both_databases(workspace: gv.Workspace) -> None:
    migrate(workspace.engine)  # a second run is a no-op
    insp = inspect(workspace.engine)
    assert "images" in insp.get_table_names()
    assert {c["name"] for c in insp.get_columns("images")} >= {
        "id",
        "width",
        "levels",
        "mpp_x",
        "crs",
        "metadata",
    }
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from gigavision.store.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert len(heads) == 1, f"migrations must form one chain, found heads {heads}"
    with workspace.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == heads
    assert {"annotations", "annotation_events", "label_classes"} <= set(insp.get_table_names())


def test_sqlite_is_wal_with_full_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIGAVISION_FSYNC", "1")  # the suite runs with syncs off (tests/conftest.py)
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_unsupported_database_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        make_engine("mysql://root@localhost/x")


def test_settings_file_env_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = gv.init_workspace(tmp_path / "ws")
    ws.close()
    settings = load_settings(tmp_path / "ws")
    assert settings.ingest.tile_size == 256 and settings.resolved_db_url().endswith("gigavision.db")
    (tmp_path / "ws" / "gigavision.toml").write_text("[limits]\nmax_tile_pixels = 5000\nmax_decode_pixels = 99\n")
    monkeypatch.setenv("GIGAVISION_LIMITS__MAX_DECODE_PIXELS", "1234")
    overridden = load_settings(tmp_path / "ws").limits
    assert overridden.max_decode_pixels == 1234  # the environment wins for the key it sets ...
    assert overridden.max_tile_pixels == 5000  # ... and the file's other limits still apply
    monkeypatch.delenv("GIGAVISION_LIMITS__MAX_DECODE_PIXELS")
    (tmp_path / "ws" / "gigavision.toml").write_text("[ingest]\ntile_size = 100\n")
    with pytest.raises(ConfigError, match="tile_size"):
        load_settings(tmp_path / "ws")
    (tmp_path / "ws" / "gigavision.toml").write_text("[ingest\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(tmp_path / "ws")
    with pytest.raises(ConfigError, match="gigavision init"):
        load_settings(tmp_path / "nowhere")


def test_workspace_on_postgres_keeps_files_local(tmp_path: Path, postgres_url: str, samples: dict[str, Path]) -> None:
    with gv.init_workspace(tmp_path / "ws", db_url=postgres_url) as ws:
        assert ws.settings.resolved_db_url() == postgres_url
        assert not (tmp_path / "ws" / "gigavision.db").exists()
        (r,) = ws.ingest([samples["astronaut.jpg"]])
    with gv.open_workspace(tmp_path / "ws") as again:  # the toml remembers the database
        assert again.get_image(r.id).name == "astronaut.jpg"
        with again.engine.connect() as conn:
            conn.execute(text("DELETE FROM images"))
            conn.commit()

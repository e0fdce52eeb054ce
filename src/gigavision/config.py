"""Workspace settings: ``gigavision.toml`` in the workspace, overridable by ``GIGAVISION_*`` variables.

Every setting can move to a service: ``db_url`` (PostgreSQL), ``blob_url`` (any fsspec URL),
``queue_url`` (Redis), ``dask`` (a Dask scheduler for tiled inference).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from gigavision.errors import ConfigError

CONFIG_NAME = "gigavision.toml"


class Limits(BaseModel):
    """Guards against decompression bombs and oversized requests."""

    max_decode_pixels: int = Field(
        2_500_000_000,
        gt=0,
        description="Most pixels decoded from an image that has no tiles (JPEG, PNG, strip TIFF), streamed or not.",
    )
    max_image_pixels: int = Field(
        60_000_000_000,
        gt=0,
        description="Most pixels an image may declare at all (the largest real slides are ~2e10).",
    )
    max_tile_pixels: int = Field(4096 * 4096, gt=0, description="Most pixels in one tile/region response.")
    max_upload_bytes: int = Field(8 * 1024**3, gt=0, description="Largest accepted upload.")
    max_request_bytes: int = Field(
        16 * 1024**2, gt=0, description="Largest body of any request that is not a file upload (JSON, forms)."
    )
    max_archive_members: int = Field(100_000, gt=0, description="Most members an imported archive may hold.")
    max_annotation_vertices: int = Field(100_000, gt=0, description="Most vertices in one annotation's geometry.")
    max_records_per_request: int = Field(10_000, gt=0, description="Most annotations written by one REST request.")
    max_train_batch_pixels: int = Field(
        64 * 512 * 512, gt=0, description="REST training: most batch size x input pixels (bounds a job's memory)."
    )


class IngestSettings(BaseModel):
    pyramid_threshold: int = Field(4096, gt=0, description="Build a pyramid when a side exceeds this (px).")
    tile_size: int = Field(256, ge=64, le=4096, multiple_of=16)
    jpeg_quality: int = Field(90, ge=1, le=100)
    thumbnail_size: int = Field(512, ge=32, le=2048)
    follow_symlinks: bool = False


class ServerSettings(BaseModel):
    """Who may reach the server and how logins last (issue 13)."""

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers besides loopback (DNS-rebinding guard), e.g. gv.example.org.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to read /iiif and /dzi tiles cross-origin (empty: none; '*': any).",
    )
    session_hours: float = Field(12.0, gt=0, description="A web login lasts this long without use.")
    login_attempts_per_minute: int = Field(10, gt=0, description="Failed logins allowed per user and per address.")


class JobSettings(BaseModel):
    """How long a running job may go silent before it is requeued or failed."""

    lease_seconds: float = Field(60.0, gt=0, description="A running job's lease; its heartbeat renews it.")
    max_retries: int = Field(2, ge=0, description="Times a job whose worker died is requeued before it fails.")


class SearchSettings(BaseModel):
    """Embedding indexes that follow new images (``gigavision index build --follow``)."""

    follow_seconds: float = Field(
        60.0,
        ge=0,
        description="Every job consumer checks the indexes built with --follow this often and queues an index add"
        " job for each one with new images; 0: never (add them with gigavision index add).",
    )


class LoopSettings(BaseModel):
    """When retraining loops start rounds on their own (``gigavision.active.loop.trigger``)."""

    check_seconds: float = Field(
        60.0,
        ge=0,
        description="Every job consumer (serve with job_workers > 0, gigavision worker) checks the enabled loops"
        " this often and queues a round of each due one; 0: never (rounds start from loop run / REST only).",
    )
    retry_seconds: float = Field(
        3600.0, ge=0, description="After a round failed or was cancelled, automatic rounds of its loop wait this long."
    )


class Settings(BaseSettings):
    """Resolved settings of one workspace. Relative paths resolve against the workspace."""

    model_config = SettingsConfigDict(env_prefix="GIGAVISION_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = Path()
    db_url: str = ""
    blob_url: str = ""
    queue_url: str = Field("", description="Job queue: empty = SQLite file in the workspace; redis://host:port/db.")
    dask: str = Field(
        "", description="Tiled inference on a Dask cluster: tcp://scheduler:8786 or local[:N]; empty = this process."
    )
    job_workers: int = Field(1, ge=0, le=64, description="Job threads inside the server (0: run `gigavision worker`).")
    limits: Limits = Limits()
    ingest: IngestSettings = IngestSettings()
    server: ServerSettings = ServerSettings()
    jobs: JobSettings = JobSettings()
    loops: LoopSettings = LoopSettings()
    search: SearchSettings = SearchSettings()
    tile_cache_mb: int = Field(256, ge=0)

    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.workspace / 'gigavision.db'}"

    def resolved_blob_url(self) -> str:
        return self.blob_url or str(self.workspace / "blobs")

    @property
    def pyramids_dir(self) -> Path:
        return self.workspace / "pyramids"

    @property
    def jobs_dir(self) -> Path:
        return self.workspace / "jobs"


def default_toml() -> str:
    return (
        "# gigavision workspace settings. Environment variables GIGAVISION_<NAME> override them\n"
        "# (nested: GIGAVISION_LIMITS__MAX_DECODE_PIXELS).\n"
        '# db_url = "postgresql+psycopg://user@127.0.0.1:5432/gigavision"  # default: SQLite in this folder\n'
        '# blob_url = "s3://bucket/prefix"                                   # default: ./blobs\n'
        '# queue_url = "redis://127.0.0.1:6379/0"                           # default: ./queue.db (SQLite)\n'
        '# dask = "tcp://scheduler:8786"         # tiled predict on a Dask cluster (default: in this process)\n'
        "\n[limits]\n"
        f"max_decode_pixels = {Limits().max_decode_pixels}\n"
        f"max_image_pixels = {Limits().max_image_pixels}\n"
        f"max_tile_pixels = {Limits().max_tile_pixels}\n"
        "\n[ingest]\n"
        f"pyramid_threshold = {IngestSettings().pyramid_threshold}\n"
        f"tile_size = {IngestSettings().tile_size}\n"
        f"jpeg_quality = {IngestSettings().jpeg_quality}\n"
    )


def load_settings(workspace: Path, **overrides: Any) -> Settings:
    """Read ``workspace/gigavision.toml``; environment variables win over the file, ``overrides`` over both."""
    workspace = workspace.expanduser().resolve()
    path = workspace / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            f"{workspace} is not a gigavision workspace (no {CONFIG_NAME}); run 'gigavision init {workspace}'"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    for name in os.environ:
        if not name.startswith("GIGAVISION_"):
            continue
        # The environment wins over the file, key by key: GIGAVISION_LIMITS__MAX_DECODE_PIXELS replaces
        # only that limit (pydantic-settings deep-merges the rest of [limits] from the file).
        *parents, leaf = name.removeprefix("GIGAVISION_").lower().split("__")
        table: Any = data
        for part in parents:
            table = table.get(part) if isinstance(table, dict) else None
        if isinstance(table, dict):
            table.pop(leaf, None)
    data.update(overrides)
    data["workspace"] = workspace
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc

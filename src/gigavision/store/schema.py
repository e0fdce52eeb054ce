"""SQLAlchemy 2 schema. Changes go through an Alembic migration in ``store/migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ImageRow(Base):
    """One ingested image. ``id`` is the sha256 of the original bytes."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(1024), index=True)
    source_path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(Text)
    pyramid: Mapped[str | None] = mapped_column(Text)  # relative to the workspace, when one was built
    reader: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(BigInteger)
    height: Mapped[int] = mapped_column(BigInteger)
    levels: Mapped[list[Any]] = mapped_column(JSON)
    bands: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16))
    mpp_x: Mapped[float | None] = mapped_column(Float)
    mpp_y: Mapped[float | None] = mapped_column(Float)
    crs: Mapped[str | None] = mapped_column(String(256))
    transform: Mapped[list[Any] | None] = mapped_column(JSON)
    modality: Mapped[str | None] = mapped_column(String(32))
    foreground_fraction: Mapped[float | None] = mapped_column(Float)
    display_window: Mapped[list[Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

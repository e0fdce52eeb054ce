"""SQLAlchemy 2 schema. Changes go through an Alembic migration in ``store/migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    case,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column


class StoredGeometry(TypeDecorator[bytes]):
    """A geometry column: WKB (or stored bytes) in, WKB out, stored with ``store/geometry_codec.py``.

    ORM and Core users see WKB, as before the codec; the annotation store's bulk paths read and write the
    stored bytes directly (``type_coerce(column, LargeBinary)``) and decode them in bulk.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        from gigavision.store.geometry_codec import encode, from_wkb  # NumPy: loaded when a geometry is

        if value is None or isinstance(value, bytes | bytearray | memoryview):
            return from_wkb(bytes(value)) if value is not None else None
        return encode([value])[0]  # a shapely geometry

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        from gigavision.store.geometry_codec import to_wkb

        return to_wkb(bytes(value)) if value is not None else None


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
    meta_by: Mapped[str | None] = mapped_column(String(256))  # who last changed the metadata (migration 0011)
    meta_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class LabelClassRow(Base):
    """One class of the workspace's label schema."""

    __tablename__ = "label_classes"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    color: Mapped[str] = mapped_column(String(16))
    parent: Mapped[str | None] = mapped_column(String(256))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> allowed values


class AnnotationImageRow(Base):
    """The small integer key of each annotated image: annotation rows store it instead of the 64-character id."""

    __tablename__ = "annotation_images"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 - a key is never reused for another image

    image_key: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(String(64), ForeignKey("images.id"), unique=True)


class AnnotationRow(Base):
    """One annotation of one image; geometry in level-0 pixels. Never silently overwritten: see events.

    Stored compactly (migration 0006; ``gigavision.store.annotations`` bulk-writes and reads the columns
    directly): the image as ``image_key`` (``image_id`` is read through ``annotation_images``), the geometry
    losslessly with ``geometry_codec`` (read and written as WKB through this mapping), empty attributes
    as NULL.
    """

    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    image_key: Mapped[int] = mapped_column(Integer, index=True)  # annotation_images.image_key
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(256))
    x0: Mapped[float | None] = mapped_column(Float)
    y0: Mapped[float | None] = mapped_column(Float)
    x1: Mapped[float | None] = mapped_column(Float)
    y1: Mapped[float | None] = mapped_column(Float)
    geometry: Mapped[bytes | None] = mapped_column(StoredGeometry)  # WKB in and out; stored compact
    mask: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # COCO RLE of the bbox window
    score: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # NULL: no attributes
    version: Mapped[int] = mapped_column(Integer, default=1)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Read-only: the image id through annotation_images. The CASE names annotations.image_key outside the
    # subquery so that even select(AnnotationRow.image_id) alone selects FROM annotations (a bare correlated
    # subquery would not correlate there).
    image_id: Mapped[str] = column_property(
        case(
            (
                image_key.is_not(None),
                select(AnnotationImageRow.image_id)
                .where(AnnotationImageRow.image_key == image_key)
                .correlate_except(AnnotationImageRow)
                .scalar_subquery(),
            )
        )
    )


class AnnotationEventRow(Base):
    """The audit trail: who changed which annotation, when, from what to what; one event per new version."""

    __tablename__ = "annotation_events"
    # migration 0007: a second writer of the same version fails here; also the index of annotation_id lookups
    __table_args__ = (Index("ux_annotation_events_version", "annotation_id", "version", unique=True),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    annotation_id: Mapped[int] = mapped_column(BigInteger)
    image_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # create | update | delete
    actor: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[int] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobRow(Base):
    """What a user sees of a background job; the queue itself is Huey's (see ``gigavision.jobs``)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed | cancelled
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # a running job's lease (its worker's heartbeat renews it; expired: the reaper requeues or fails the job)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(256))  # host:pid that claimed it last
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # claims so far
    cancelled_by: Mapped[str | None] = mapped_column(String(256))  # who asked for the cancel (migration 0011)


class LabelEventRow(Base):
    """A change to the label schema (class set, renamed, merged, removed) and how many annotations moved."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))  # set | rename | merge | remove
    actor: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    annotations_changed: Mapped[int] = mapped_column(BigInteger, default=0)


class DatasetVersionRow(Base):
    """One immutable dataset version ``name@version`` (``gigavision.datasets``): written once, never updated."""

    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(80), unique=True)  # "name@version": one row per version number
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(256))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # filters, statuses, split ratios, grouping, seed
    label_schema: Mapped[list[Any]] = mapped_column(JSON)  # the frozen label classes
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)  # images/annotations per split and class


class DatasetImageRow(Base):
    """One image of a dataset version: its split and the blob of its frozen annotations."""

    __tablename__ = "dataset_images"

    version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("dataset_versions.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # rank by (name, id): the listing order
    image_id: Mapped[str] = mapped_column(String(64), ForeignKey("images.id"), index=True)
    name: Mapped[str] = mapped_column(String(1024))
    width: Mapped[int] = mapped_column(BigInteger)
    height: Mapped[int] = mapped_column(BigInteger)
    bands: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(32))
    group_index: Mapped[int] = mapped_column(Integer)  # images of one group always share a split
    label: Mapped[str | None] = mapped_column(String(256))  # majority label (the stratum), None: no annotations
    n_annotations: Mapped[int] = mapped_column(Integer)
    annotations_sha: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical JSON
    annotations_key: Mapped[str] = mapped_column(Text)  # blob key of the gzipped canonical JSON


class ImageHashRow(Base):
    """Cached 64-bit perceptual hash of an image's thumbnail (images never change, so neither does this)."""

    __tablename__ = "image_hashes"

    image_id: Mapped[str] = mapped_column(String(64), ForeignKey("images.id"), primary_key=True)
    phash: Mapped[str] = mapped_column(String(16))  # hex
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QcItemRow(Base):
    """A unit of multi-annotator quality control (``gigavision.active.quality``): a whole image or a region
    of one, labelled independently by ``required`` annotators; agreement decides between consensus and
    adjudication."""

    __tablename__ = "qc_items"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(String(64), ForeignKey("images.id"), index=True)
    x0: Mapped[float | None] = mapped_column(Float)  # region in level-0 pixels; all None: the whole image
    y0: Mapped[float | None] = mapped_column(Float)
    x1: Mapped[float | None] = mapped_column(Float)
    y1: Mapped[float | None] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))  # what is labelled: tag | box | polygon | mask | point
    labels: Mapped[list[Any]] = mapped_column(JSON)  # candidate classes; empty: any
    required: Mapped[int] = mapped_column(Integer)  # independent labellings needed (≥ 2)
    threshold: Mapped[float] = mapped_column(Float)  # least agreement for an automatic consensus
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # matching: iou_threshold, match_labels, point_radius
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | agreed | adjudication | adjudicated
    agreement: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # pairwise table, decision
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every locked write
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(256))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QcAssignmentRow(Base):
    """Who labels (role annotator) or decides (role adjudicator) a QC item. Migration 0005 makes
    (item_id, annotator) unique: nobody holds two roles, or one role twice, on the same item."""

    __tablename__ = "qc_assignments"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("qc_items.id"), index=True)
    annotator: Mapped[str] = mapped_column(String(256), index=True)
    role: Mapped[str] = mapped_column(String(16))  # annotator | adjudicator
    status: Mapped[str] = mapped_column(String(16))  # assigned | submitted
    assigned_by: Mapped[str] = mapped_column(String(256))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QcLabelRow(Base):
    """Which annotations make up an annotator's submission (role submission) or an item's consensus."""

    __tablename__ = "qc_labels"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("qc_items.id"), index=True)
    annotation_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("annotations.id"))
    annotator: Mapped[str | None] = mapped_column(String(256))  # None for the consensus
    role: Mapped[str] = mapped_column(String(16))  # submission | consensus
    verdict: Mapped[str | None] = mapped_column(String(16))  # submissions, once decided: accepted | rejected


class UserRow(Base):
    """A person who logs in (``gigavision.store.users``): argon2id password hash, one role, never deleted
    (disabled instead, so what they did keeps a name)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))  # admin | manager | reviewer | annotator | viewer
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoginSessionRow(Base):
    """A web login: the cookie's random id is stored only as its sha256; expiry slides with use."""

    __tablename__ = "login_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ApiTokenRow(Base):
    """An API token (``Authorization: Bearer``): the secret is shown once and stored only as its sha256."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # at most the user's permissions
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginAttemptRow(Base):
    """A failed login, kept a minute for the per-user and per-address rate limits."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(String(200), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


# -- issue 14: the loop (review tasks, routing, model aliases, retraining loops) ------------------------------


class ReviewTaskRow(Base):
    """Something an expert should look at (``gigavision.store.reviews``): a model's prediction to accept,
    correct or reject (reason ``uncertain`` or ``audit``), an image or region to label (``selected`` by active
    learning) or a label suspected wrong (``suspect``). Answered once; ``version`` guards concurrent answers."""

    __tablename__ = "review_tasks"
    __table_args__ = (Index("ix_review_tasks_open", "status", "priority"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    reason: Mapped[str] = mapped_column(String(16))  # uncertain | audit | selected | suspect
    status: Mapped[str] = mapped_column(String(16))  # open | answered | cancelled
    image_id: Mapped[str] = mapped_column(String(64), ForeignKey("images.id"), index=True)
    x0: Mapped[float | None] = mapped_column(Float)  # region to look at, level-0 pixels; all None: whole image
    y0: Mapped[float | None] = mapped_column(Float)
    x1: Mapped[float | None] = mapped_column(Float)
    y1: Mapped[float | None] = mapped_column(Float)
    annotation_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # the prediction or suspect label
    model_id: Mapped[str | None] = mapped_column(String(64), index=True)
    label: Mapped[str | None] = mapped_column(String(256))  # the predicted / suspected label
    score: Mapped[float | None] = mapped_column(Float)
    uncertainty: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float, default=0.0)  # higher first
    batch: Mapped[str | None] = mapped_column(String(64), index=True)  # one selection run, one predict, ...
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # strategy, suspect kind, ...
    assignee: Mapped[str | None] = mapped_column(String(256))  # None: anyone with the permission
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decision: Mapped[str | None] = mapped_column(String(16))  # accept | correct | reject | labelled | skip
    decided_by: Mapped[str | None] = mapped_column(String(256))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_annotation_id: Mapped[int | None] = mapped_column(BigInteger)  # the expert's label, if one was made
    version: Mapped[int] = mapped_column(Integer, default=1)


class RoutingPolicyRow(Base):
    """Where a model's stored predictions go (``gigavision.active.routing``): uncertainty above ``threshold``
    to review, the rest auto-accepted, ``audit_share`` of those to review anyway. ``label`` "" : all labels."""

    __tablename__ = "routing_policies"

    model_ref: Mapped[str] = mapped_column(String(128), primary_key=True)  # a model id or an alias
    label: Mapped[str] = mapped_column(String(256), primary_key=True, default="")
    threshold: Mapped[float] = mapped_column(Float)
    audit_share: Mapped[float] = mapped_column(Float, default=0.0)
    updated_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelAliasRow(Base):
    """A name (``production``, ``staging``, any) that points at one published model (``models/aliases.py``)."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every move: concurrent promotes conflict
    updated_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelAliasEventRow(Base):
    """The history of an alias: every set, promote, rollback and removal, who did it and the evidence."""

    __tablename__ = "model_alias_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(16))  # set | promote | rollback | remove
    model_id: Mapped[str | None] = mapped_column(String(64))  # where it points now (None: removed)
    previous_model_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # comparison, CI, loop run


class LoopRow(Base):
    """A retraining loop (``gigavision.active.loop``): when ``every`` new accepted labels exist since the
    aliased model's dataset version, freeze the next version, train with the recipe, compare on the same
    test split and promote by ``margin``."""

    __tablename__ = "loops"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64))  # dataset name; each round freezes its next version
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)  # the resolved training recipe
    every: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(64))
    margin: Mapped[float] = mapped_column(Float, default=0.0)
    alias: Mapped[str] = mapped_column(String(64), default="production")
    warm_start: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoopRunRow(Base):
    """One round of a loop: the dataset version it froze, the candidate, the comparison, the decision."""

    __tablename__ = "loop_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    loop: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # running | promoted | kept | failed
    job_id: Mapped[str | None] = mapped_column(String(32))
    dataset_ref: Mapped[str | None] = mapped_column(String(80))
    baseline_model_id: Mapped[str | None] = mapped_column(String(64))
    candidate_model_id: Mapped[str | None] = mapped_column(String(64))
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # metrics, paired bootstrap
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

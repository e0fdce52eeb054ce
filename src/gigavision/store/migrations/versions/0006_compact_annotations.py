"""compact annotations: a small integer image key, compact geometry, NULL for empty attributes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

For 5 M polygons in ≤ 2 GB (DESIGN.md §6), each annotation row stops repeating what other rows hold:

- ``annotation_images (image_key, image_id)`` gives every annotated image a small integer key; the
  annotation row keeps only ``image_key`` (1-4 bytes instead of the 64-character id, which moves here
  with its foreign key to ``images``). Existing keys (the id's first 24 bits) are kept, so PostgreSQL
  rewrites no row, except those of an image whose prefix collides with another image's: it gets a new key.
- ``geometry`` is written by ``gigavision.store.geometry_codec`` from now on: lossless, each axis as integer
  deltas on the coarsest exact 2^-k grid (a 20-vertex outline: ~60-100 bytes for mask or float32 vertices,
  ~250 for arbitrary doubles, instead of 349 as WKB). Existing WKB rows are left as they are and read
  transparently (a later edit rewrites its row compactly).
- ``attributes`` may be NULL, meaning ``{}`` (SQLite's rebuilt rows get NULL for ``{}``; PostgreSQL's
  existing rows keep ``{}``, which reads the same).

SQLite cannot drop a column that holds a foreign key, so its table is rebuilt (same ids, so the R*Tree
keeps its rows; its triggers are recreated). Foreign keys from other tables to ``annotations.id`` stay
valid: their checks are deferred to the commit, when the copied rows satisfy them again. PostgreSQL
changes the table in place (``DROP COLUMN`` rewrites nothing).
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FIRST_NEW_KEY = 1 << 24  # above every 24-bit prefix key
COLUMNS = (
    "id, image_key, kind, label, x0, y0, x1, y1, geometry, mask, score, source, status, attributes, "
    "version, deleted, created_by, created_at, updated_at"
)
RTREE_TRIGGERS = (
    "CREATE TRIGGER annotations_rtree_insert AFTER INSERT ON annotations "
    "WHEN NEW.x0 IS NOT NULL AND NEW.deleted = 0 "
    "BEGIN INSERT INTO annotations_rtree VALUES (NEW.id, NEW.x0, NEW.x1, NEW.y0, NEW.y1); END",
    "CREATE TRIGGER annotations_rtree_update AFTER UPDATE OF x0, y0, x1, y1, deleted ON annotations "
    "BEGIN DELETE FROM annotations_rtree WHERE id = OLD.id; "
    "INSERT INTO annotations_rtree SELECT NEW.id, NEW.x0, NEW.x1, NEW.y0, NEW.y1 "
    "WHERE NEW.x0 IS NOT NULL AND NEW.deleted = 0; END",
    "CREATE TRIGGER annotations_rtree_delete AFTER DELETE ON annotations "
    "BEGIN DELETE FROM annotations_rtree WHERE id = OLD.id; END",
)


def _annotation_columns(*, with_image_id: bool) -> list[sa.Column[object]]:
    """The annotations table after 0006, or (``with_image_id``) as 0002 made it."""
    cols: list[sa.Column[object]] = [sa.Column("id", ID, primary_key=True, autoincrement=True)]
    if with_image_id:
        cols.append(sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), nullable=False))
    return [
        *cols,
        sa.Column("image_key", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("x0", sa.Float()),
        sa.Column("y0", sa.Float()),
        sa.Column("x1", sa.Float()),
        sa.Column("y1", sa.Float()),
        sa.Column("geometry", sa.LargeBinary()),
        sa.Column("mask", sa.JSON()),
        sa.Column("score", sa.Float()),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=not with_image_id),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _sqlite_begin(bind: sa.Connection) -> None:
    """Make sure the rebuild runs inside one transaction (pysqlite only opens one before DML)."""
    raw = bind.connection.driver_connection
    if not raw.in_transaction:  # type: ignore[union-attr]
        bind.exec_driver_sql("BEGIN")
    bind.exec_driver_sql("PRAGMA defer_foreign_keys = ON")  # checked at commit; reset by it


def _check_foreign_keys(bind: sa.Connection) -> None:
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration 0006 would break foreign keys: {broken[:5]}")


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        _sqlite_begin(bind)
    op.create_table(
        "annotation_images",
        sa.Column("image_key", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(64), sa.ForeignKey("images.id"), nullable=False, unique=True),
        sqlite_autoincrement=True,
    )
    # every annotated image keeps its 24-bit prefix key unless another image already has that prefix
    by_key: dict[int, list[str]] = defaultdict(list)
    for image_id, key in bind.execute(sa.text("SELECT DISTINCT image_id, image_key FROM annotations")):
        by_key[int(key)].append(str(image_id))
    rows, moved = [], []
    next_key = FIRST_NEW_KEY
    for key in sorted(by_key):
        first, *others = sorted(by_key[key])
        rows.append({"image_key": key, "image_id": first})
        for image_id in others:
            rows.append({"image_key": next_key, "image_id": image_id})
            moved.append({"key": next_key, "image_id": image_id})
            next_key += 1
    if rows:
        bind.execute(
            sa.text("INSERT INTO annotation_images (image_key, image_id) VALUES (:image_key, :image_id)"), rows
        )
    if moved:
        bind.execute(sa.text("UPDATE annotations SET image_key = :key WHERE image_id = :image_id"), moved)

    if sqlite:
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS annotations_rtree_{trigger}")
        op.execute("CREATE TABLE annotations_0006_old AS SELECT * FROM annotations")
        op.drop_index("ix_annotations_image_key", "annotations")
        op.execute("DROP TABLE annotations")
        op.create_table("annotations", *_annotation_columns(with_image_id=False))
        copied = COLUMNS.replace("attributes", "NULLIF(attributes, '{}')")
        op.execute(f"INSERT INTO annotations ({COLUMNS}) SELECT {copied} FROM annotations_0006_old ORDER BY id")  # noqa: S608
        op.execute("DROP TABLE annotations_0006_old")
        op.create_index("ix_annotations_image_key", "annotations", ["image_key"])
        for sql in RTREE_TRIGGERS:
            op.execute(sql)
        _check_foreign_keys(bind)
    else:
        op.drop_column("annotations", "image_id")  # and its foreign key, which now lives on annotation_images
        op.alter_column("annotations", "attributes", nullable=True)
        op.execute(
            "SELECT setval(pg_get_serial_sequence('annotation_images', 'image_key'), "
            "GREATEST((SELECT max(image_key) FROM annotation_images), 1))"
        )


def downgrade() -> None:
    """Back to 0003's layout: the image id on every row, WKB geometry, ``{}`` for empty attributes."""
    from gigavision.store.geometry_codec import TAG, to_wkb

    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        _sqlite_begin(bind)
    # compact geometry back to WKB, in batches
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, geometry FROM annotations WHERE id > :last AND geometry IS NOT NULL ORDER BY id LIMIT 5000"
            ),
            {"last": last},
        ).fetchall()
        if not rows:
            break
        last = int(rows[-1][0])
        wkb = [{"id": i, "g": to_wkb(bytes(g))} for i, g in rows if bytes(g)[:1] == bytes([TAG])]
        if wkb:
            bind.execute(sa.text("UPDATE annotations SET geometry = :g WHERE id = :id"), wkb)
    if sqlite:
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS annotations_rtree_{trigger}")
        op.execute("CREATE TABLE annotations_0006_new AS SELECT * FROM annotations")
        op.drop_index("ix_annotations_image_key", "annotations")
        op.execute("DROP TABLE annotations")
        op.create_table("annotations", *_annotation_columns(with_image_id=True))
        old_columns = COLUMNS.replace("attributes", "COALESCE(attributes, '{}')").replace(
            "id, image_key", "n.id, m.image_id, n.image_key"
        )
        op.execute(
            f"INSERT INTO annotations (id, image_id, {COLUMNS.removeprefix('id, ')}) "  # noqa: S608
            f"SELECT {old_columns} FROM annotations_0006_new n "
            "JOIN annotation_images m ON m.image_key = n.image_key ORDER BY n.id"
        )
        op.execute("DROP TABLE annotations_0006_new")
        op.create_index("ix_annotations_image_key", "annotations", ["image_key"])
        for sql in RTREE_TRIGGERS:
            op.execute(sql)
        _check_foreign_keys(bind)
    else:
        op.add_column("annotations", sa.Column("image_id", sa.String(64)))
        op.execute(
            "UPDATE annotations a SET image_id = m.image_id FROM annotation_images m WHERE m.image_key = a.image_key"
        )
        op.execute("UPDATE annotations SET attributes = '{}' WHERE attributes IS NULL")
        op.alter_column("annotations", "image_id", nullable=False)
        op.alter_column("annotations", "attributes", nullable=False)
        op.create_foreign_key("annotations_image_id_fkey", "annotations", "images", ["image_id"], ["id"])
    # keys back to the id's first 24 bits, as 0002 computed them
    for image_id, key in bind.execute(sa.text("SELECT image_id, image_key FROM annotation_images")).fetchall():
        prefix = int(str(image_id)[:6], 16)
        if prefix != key:
            bind.execute(
                sa.text("UPDATE annotations SET image_key = :prefix WHERE image_id = :image_id"),
                {"prefix": prefix, "image_id": image_id},
            )
    op.drop_table("annotation_images")

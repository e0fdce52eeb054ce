"""Roles and their permissions: the one table the server's route declarations, the CLI and the tests read.

Roles are not a ladder: each has an explicit set of permissions. Kept free of database imports so that the
CLI's help and the server's route declarations cost nothing to import.
"""

from __future__ import annotations

from dataclasses import dataclass

from gigavision.errors import InvalidInput

#: What each permission allows (the server declares one per route).
PERMISSIONS: dict[str, str] = {
    "view": "images and their metadata, thumbnails, tiles, prediction layers, the label schema",
    "annotations.read": "annotations and their history (an annotator: without others' labels of open QC items)",
    "annotations.write": "add, edit and delete annotations",
    "data.read": "datasets, models and reports, jobs and their files, QC reports, the schema's change log",
    "qc.read": "QC items (labels of an open item only to their author), agreement, consensus",
    "qc.submit": "hand in labels for an assigned QC item",
    "qc.review": "the adjudication queue; adjudicate disputed QC items",
    "qc.setup": "create QC items and assign annotators and adjudicators",
    "schema": "set, rename, merge and remove label classes",
    "images.write": "upload images, edit image metadata",
    "datasets.write": "freeze dataset versions",
    "train": "train and evaluate models",
    "predict": "run published models (and store their predictions)",
    "transfer": "import and export annotations",
    "jobs.manage": "cancel jobs",
    "review": "answer review and labelling tasks: accept, correct or reject a model's proposal, label a selection",
    "deploy": "model aliases (promote, rollback), routing policies, active-learning selections, retraining loops",
    "users": "manage users and tokens",
}
_READ = frozenset({"view", "annotations.read", "data.read", "qc.read"})
#: The one permission table. Not a ladder: an annotator cannot adjudicate, a reviewer cannot set up QC.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "manager": _READ
    | {
        "annotations.write",
        "qc.setup",
        "schema",
        "images.write",
        "datasets.write",
        "train",
        "predict",
        "transfer",
        "jobs.manage",
        "review",
        "deploy",
    },
    "reviewer": _READ | {"annotations.write", "qc.review", "review"},
    # Independence of QC: no datasets, exports or job files (they hold everyone's labels).
    "annotator": frozenset({"view", "annotations.read", "annotations.write", "qc.read", "qc.submit", "review"}),
    "viewer": _READ,
}
ROLES = tuple(ROLE_PERMISSIONS)
#: The name every request acts as in a workspace without users.
LOCAL_USER = "local"


def check_role(role: str) -> str:
    if role not in ROLE_PERMISSIONS:
        raise InvalidInput(f"role {role!r}: unknown; known: {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class Login:
    """Who a request acts as and what it may do. ``via``: session | token | local (no users)."""

    name: str
    role: str
    permissions: frozenset[str]
    via: str
    csrf: str | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions


LOCAL_LOGIN = Login(LOCAL_USER, "admin", ROLE_PERMISSIONS["admin"], "local")

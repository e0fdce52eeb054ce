"""Finding label errors (issue 14): out-of-fold predictions rank suspected wrong labels."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/label-errors", tags=["label errors"])

"""Active learning (issue 14): choose the next images or regions worth labelling."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/active", tags=["active learning"])

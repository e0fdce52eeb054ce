"""Review tasks (issue 14): list, next, answer; routing policies and production monitoring of models."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/reviews", tags=["reviews"])

"""Deployment (issue 14): model aliases with promote / rollback and their history, retraining loops."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["deployment"])

"""Placeholder router; filled in by the portal API work."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

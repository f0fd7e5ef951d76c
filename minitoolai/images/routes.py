"""HTTP routes of images."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(redirect_slashes=False)

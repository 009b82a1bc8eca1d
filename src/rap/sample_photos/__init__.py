"""The photos that ship with rap: package data, so that what uses them needs nothing else of rap.

Two parts of rap use them: ``rap demo`` remembers and retrieves concepts from
them, and the int8 image encoder calibrates its activation ranges on their
crops (:mod:`rap.encoders.efficientnet`). Where each photo comes from and its
licence: ``SOURCES.md`` beside them.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent
"""The folder holding the photos (``*.jpg``)."""


def photos() -> list[Path]:
    """Every bundled photo, in name order."""
    return sorted(FOLDER.glob("*.jpg"))

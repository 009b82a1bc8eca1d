"""Shared fixtures: every test gets its own RAP_HOME, and real photos live in tests/photos."""

from __future__ import annotations

from pathlib import Path

import pytest

PHOTOS = Path(__file__).parent / "photos"


@pytest.fixture(autouse=True)
def rap_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point RAP_HOME at a fresh folder so no test touches the user's real store."""
    home = tmp_path / "rap-home"
    monkeypatch.setenv("RAP_HOME", str(home))
    for var in ("RAP_DB", "RAP_ENCODER", "RAP_DETECTOR", "RAP_FACES", "RAP_CONFIG", "RAP_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def photos() -> Path:
    return PHOTOS

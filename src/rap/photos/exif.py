"""What a photo's EXIF header says: when it was taken and which way up it is."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PIL import Image

_ORIENTATION = 0x0112
_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003


def exif_facts(path: Path) -> tuple[str | None, int]:
    """The date taken as ISO text (None if absent or unreadable) and the EXIF orientation (1: as stored).

    Read from the header alone; a photo without EXIF is not an error.
    """
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            orientation = int(exif.get(_ORIENTATION, 1) or 1)
            raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except (OSError, ValueError, SyntaxError, TypeError):
        return None, 1
    return _iso(raw), orientation if 1 <= orientation <= 8 else 1


def _iso(raw: object) -> str | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None

"""Loading user images safely.

Every image that enters rap, a reference image or a query, goes through
:func:`load_image`. It turns every way a file can be bad (missing, empty,
truncated, not an image, an unsupported format, a decompression bomb) into one
:class:`~rap.errors.InvalidImage` with a one-line message, and returns an RGB
image with its EXIF orientation applied, so a phone photo is the right way up.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from rap.errors import InvalidImage

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "HEIF"})
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 8000 x 8000; beyond that a decode costs gigabytes
MIN_SIDE = 8

Box = tuple[int, int, int, int]
"""A pixel box ``(x0, y0, x1, y1)``: left, top, right (exclusive), bottom (exclusive)."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image with the bytes it came from (for content addressing)."""

    image: Image.Image
    data: bytes
    format: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def suffix(self) -> str:
        return ".jpg" if self.format in {"JPEG", "MPO"} else f".{self.format.lower()}"


@functools.cache
def _open_heif() -> None:
    """Teach Pillow HEIC/HEIF, the format phones save photos in, when pillow-heif (the serve extra) is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def decode_image(
    data: bytes, label: str = "image", *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """Decode image bytes, refusing anything rap could not use safely (a service passes its own limits)."""
    if not data:
        raise InvalidImage(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise InvalidImage(f"{label}: {len(data) / 2**20:.1f} MiB is larger than the {max_bytes / 2**20:.1f} MiB limit")
    _open_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = probe.format or ""
            if fmt not in SUPPORTED_FORMATS:
                raise InvalidImage(
                    f"{label}: format {fmt or 'unknown'} is not supported; use one of "
                    f"{', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))}"
                )
            width, height = probe.size
            if width * height > max_pixels:
                raise InvalidImage(f"{label}: {width}x{height} pixels is more than the {max_pixels:,} pixel limit")
            probe.load()
            image = ImageOps.exif_transpose(probe).convert("RGB")
    except InvalidImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidImage(f"{label}: the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{label}: not an image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{label}: the image is corrupt or truncated ({exc})") from None
    if min(image.size) < MIN_SIDE:
        raise InvalidImage(f"{label}: {image.width}x{image.height} is too small (under {MIN_SIDE} px)")
    return LoadedImage(image=image, data=data, format=fmt)


def load_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read and decode an image file; see :func:`decode_image` for what is refused."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidImage(f"{path}: cannot read ({exc.strerror})") from None
    if path.is_dir():
        raise InvalidImage(f"{path}: is a folder, not an image")
    if size > MAX_FILE_BYTES:
        raise InvalidImage(
            f"{path}: {size / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES // 2**20} MiB limit"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImage(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, label=str(path))


ImageInput = Union[str, "os.PathLike[str]", LoadedImage, Image.Image]
"""Anything rap takes as an image: a path, a decoded file, or a PIL image."""


def as_rgb(image: ImageInput) -> Image.Image:
    """An RGB PIL image from any :data:`ImageInput`; paths go through :func:`load_image`'s checks."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, LoadedImage):
        return image.image
    return load_image(image).image


def crop(image: Image.Image, box: Box, margin: float = 0.0) -> Image.Image:
    """Crop ``box`` out of ``image``, grown by ``margin`` (a share of its size) and clipped."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    clipped = (
        max(0, int(x0 - dx)),
        max(0, int(y0 - dy)),
        min(image.width, int(round(x1 + dx))),
        min(image.height, int(round(y1 + dy))),
    )
    return image.crop(clipped)

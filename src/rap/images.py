"""Loading user images safely, and no larger than the work needs.

Every image that enters rap, a reference image or a query, goes through this
module. It turns every way a file can be bad (missing, not a regular file,
empty, truncated, not an image, an unsupported format, a decompression bomb)
into one :class:`~rap.errors.InvalidImage` with a one-line message, and returns
an RGB image with its EXIF orientation applied, so a phone photo is the right
way up.

Many photos at once must not cost memory in proportion to their number, so
checking is split from decoding: :func:`check_image` reads a file's header only
(format, size, pixel limit), cheaply enough to check a whole library before any
work, and :meth:`ImageFile.load` decodes one when it is needed. Only regular
files are read (a FIFO would block forever, ``/dev/zero`` never ends), and never
more than :data:`MAX_FILE_BYTES`.

A model looks at a 224-pixel crop, not at 12 megapixels, so a caller may ask
for a smaller image (``shorter_side``): JPEG decodes straight
at 1/2, 1/4 or 1/8 scale (``Image.draft``), which is several times faster than a
full decode, and the result is resized once to the size asked for.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from rap.errors import InvalidImage

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "HEIF"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif"})
"""File name suffixes taken for images when a folder is scanned (the supported formats')."""
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 8000 x 8000; beyond that a decode costs gigabytes
MIN_SIDE = 8

Box = tuple[int, int, int, int]
"""A pixel box ``(x0, y0, x1, y1)``: left, top, right (exclusive), bottom (exclusive)."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image with the bytes it came from (for content addressing).

    ``image`` may be a reduced copy (see :func:`decode_image`); ``size`` is
    always the size of the image the bytes hold, the right way up.
    """

    image: Image.Image
    data: bytes
    format: str
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.size is None:
            object.__setattr__(self, "size", self.image.size)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def suffix(self) -> str:
        return suffix_for(self.format)


@functools.cache
def _open_heif() -> None:
    """Teach Pillow HEIC/HEIF, the format phones save photos in, when pillow-heif (the serve extra) is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def suffix_for(fmt: str) -> str:
    """The file suffix rap stores an image of format ``fmt`` under."""
    return ".jpg" if fmt in {"JPEG", "MPO"} else f".{fmt.lower()}"


@dataclass(frozen=True)
class ImageFile:
    """An image file checked by its header but not decoded: cheap to hold thousands of."""

    path: Path
    format: str
    #: (width, height) as stored, before any EXIF rotation
    size: tuple[int, int]

    def read(self) -> bytes:
        """The file's bytes, read again (so nothing is held between check and use)."""
        return read_file(self.path)

    def load(self, shorter_side: int | None = None) -> LoadedImage:
        """Decode the file, reduced as :func:`decode_image` explains."""
        return decode_image(self.read(), str(self.path), shorter_side=shorter_side)


@dataclass(frozen=True)
class ImageData:
    """Image bytes checked by their header but not decoded: what a service holds between reading an
    upload and decoding it, so that a request's every image is checked before any costs memory."""

    data: bytes
    label: str
    format: str
    #: (width, height) as stored, before any EXIF rotation
    size: tuple[int, int]
    max_pixels: int = MAX_PIXELS

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    def decoding_pixels(self, shorter_side: int | None = None) -> int:
        """The most pixels decoding it reduced to ``shorter_side`` holds at once: a JPEG decodes
        straight at 1/2 to 1/8 scale, any other format at full size (then is reduced)."""
        scale = _scale(self.size, shorter_side)
        if self.format in {"JPEG", "MPO"} and scale < 1.0:
            # the DCT scale is at most twice the target's on each side
            return min(self.pixels, math.ceil(self.pixels * min(1.0, 2 * scale) ** 2))
        return self.pixels

    def load(self, shorter_side: int | None = None) -> LoadedImage:
        """Decode it, reduced as :func:`decode_image` explains (blocking work: run it in a worker thread)."""
        return decode_image(self.data, self.label, shorter_side=shorter_side, max_bytes=len(self.data), max_pixels=self.max_pixels)


def check_data(data: bytes, label: str = "image", *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS) -> ImageData:
    """Check image bytes by their header alone (format, size, pixel limit): a few microseconds,
    whatever the image's size, and nothing decoded."""
    if not data:
        raise InvalidImage(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise InvalidImage(_too_big(label, len(data), max_bytes))
    with _refusing(label):
        fmt, size = _check_header(Image.open(io.BytesIO(data)), label, max_pixels)
    return ImageData(data, label, fmt, size, max_pixels)


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file; return the handle and its size.

    Opened non-blocking, so that a FIFO is refused instead of waiting for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidImage(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise InvalidImage(f"{path}: cannot read ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidImage(f"{path}: is a folder, not an image")
        raise InvalidImage(f"{path}: not a regular file (a device, pipe or socket); give an image file")
    if info.st_size > MAX_FILE_BYTES:
        os.close(fd)
        raise InvalidImage(_too_big(str(path), info.st_size))
    return os.fdopen(fd, "rb"), info.st_size


def _too_big(label: str, size: int, limit: int = MAX_FILE_BYTES) -> str:
    return f"{label}: {size / 2**20:.1f} MiB is larger than the {limit / 2**20:.1f} MiB limit"


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file, refusing anything else and anything over :data:`MAX_FILE_BYTES`."""
    path = Path(path)
    handle, _ = _open_regular(path)
    try:
        with handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise InvalidImage(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImage(_too_big(str(path), len(data)))
    return data


def check_image(path: str | os.PathLike[str]) -> ImageFile:
    """Check a file by its header alone: everything :func:`load_image` refuses short of a
    corrupt body, at the cost of a few kilobytes read."""
    path = Path(path)
    handle, size = _open_regular(path)
    with handle:
        if not size:
            raise InvalidImage(f"{path}: the file is empty")
        with _refusing(str(path)):
            probe = Image.open(handle)
            fmt, size = _check_header(probe, str(path))
    return ImageFile(path, fmt, size)


def _check_header(probe: Image.Image, label: str, max_pixels: int = MAX_PIXELS) -> tuple[str, tuple[int, int]]:
    fmt = probe.format or ""
    if fmt not in SUPPORTED_FORMATS:
        raise InvalidImage(
            f"{label}: format {fmt or 'unknown'} is not supported; use one of "
            f"{', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))}"
        )
    width, height = probe.size
    if width * height > max_pixels:
        raise InvalidImage(f"{label}: {width}x{height} pixels is more than the {max_pixels:,} pixel limit")
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(f"{label}: {width}x{height} is too small (under {MIN_SIDE} px)")
    return fmt, (width, height)


@contextmanager
def _refusing(label: str) -> Iterator[None]:
    """Turn what Pillow raises for a bad image into one :class:`InvalidImage`."""
    _open_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidImage:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidImage(f"{label}: the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{label}: not an image file") from None
    except MemoryError:
        raise InvalidImage(f"{label}: the image is too large to decode in the memory available") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"{label}: the image is corrupt or truncated ({exc})") from None


def _scale(size: tuple[int, int], shorter_side: int | None) -> float:
    """The factor (at most 1) that brings the shorter side of ``size`` to ``shorter_side``,
    and a panorama to at most four times ``shorter_side`` squared pixels."""
    if not shorter_side:
        return 1.0
    return min(1.0, shorter_side / min(size), 2 * shorter_side / math.sqrt(size[0] * size[1]))


def decode_image(
    data: bytes,
    label: str = "image",
    *,
    shorter_side: int | None = None,
    max_bytes: int = MAX_FILE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> LoadedImage:
    """Decode image bytes, refusing anything rap could not use safely (a service passes its own limits).

    With ``shorter_side``, the image is reduced (never enlarged) until its
    shorter side is no longer than that (see :func:`_scale`), which keeps the
    memory a decoded image holds small whatever the file's size; only one
    full-size image (not JPEG, which decodes reduced) is held at a time.
    """
    if not data:
        raise InvalidImage(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise InvalidImage(_too_big(label, len(data), max_bytes))
    with _refusing(label):
        probe = Image.open(io.BytesIO(data))
        fmt, stored = _check_header(probe, label, max_pixels)
        scale = _scale(stored, shorter_side)
        if scale < 1.0 and fmt in {"JPEG", "MPO"}:
            # decode at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the target
            probe.draft("RGB", (math.ceil(stored[0] * scale), math.ceil(stored[1] * scale)))
        probe.load()
        decoded = probe.size
        ImageOps.exif_transpose(probe, in_place=True)  # a copy would cost as much as the decode
        image = rgb(probe)
        upright = stored if image.size == decoded else (stored[1], stored[0])
        if scale < 1.0:
            wanted = (max(1, round(upright[0] * scale)), max(1, round(upright[1] * scale)))
            if wanted != image.size:
                image = image.resize(wanted, Image.Resampling.BICUBIC)
    return LoadedImage(image=image, data=data, format=fmt, size=upright)


def load_image(path: str | os.PathLike[str], *, shorter_side: int | None = None) -> LoadedImage:
    """Read and decode an image file; see :func:`decode_image` for what is refused."""
    path = Path(path)
    return decode_image(read_file(path), str(path), shorter_side=shorter_side)


ImageInput = Union[str, "os.PathLike[str]", LoadedImage, ImageFile, Image.Image]
"""Anything rap takes as an image: a path, a checked or decoded file, or a PIL image."""


def as_rgb(image: ImageInput) -> Image.Image:
    """An RGB PIL image from any :data:`ImageInput`; paths go through :func:`load_image`'s checks."""
    return reduced(image)[0]


def reduced(image: ImageInput, shorter_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """An RGB image from any :data:`ImageInput`, its shorter side at most ``shorter_side``,
    and the size of the full image (which boxes are reported in)."""
    if isinstance(image, LoadedImage):
        assert image.size is not None
        return reduce(image.image, shorter_side), image.size
    if isinstance(image, Image.Image):
        return reduce(rgb(image), shorter_side), image.size
    loaded = image.load(shorter_side) if isinstance(image, ImageFile) else load_image(image, shorter_side=shorter_side)
    assert loaded.size is not None
    return loaded.image, loaded.size


def as_loaded(image: ImageInput, shorter_side: int | None = None) -> LoadedImage:
    """Any :data:`ImageInput` as a :class:`LoadedImage` reduced to ``shorter_side`` that keeps the
    full image's size (which boxes are reported in): what a conversation holds of its photo."""
    if isinstance(image, LoadedImage):
        assert image.size is not None
        return LoadedImage(reduce(image.image, shorter_side), image.data, image.format, image.size)
    if isinstance(image, Image.Image):
        return LoadedImage(reduce(rgb(image), shorter_side), b"", image.format or "", image.size)
    return image.load(shorter_side) if isinstance(image, ImageFile) else load_image(image, shorter_side=shorter_side)


def rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: itself when it already is, not a copy."""
    return image if image.mode == "RGB" else image.convert("RGB")


def reduce(image: Image.Image, shorter_side: int | None = None) -> Image.Image:
    """``image`` resized (never enlarged) as :func:`decode_image` reduces."""
    scale = _scale(image.size, shorter_side)
    if scale >= 1.0:
        return image
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
    )


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

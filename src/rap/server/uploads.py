"""Reading what a request sends: images (checked as the CLI checks files, under the service's
limits) and free text (bounded).

Images come in two steps, so that no request can make the worker hold more
than it allows. First every image of the request is read and checked by its
header alone (format, size, pixels), and their pixels are added up against
``max_request_pixels``: a request that is too large is refused before anything
is decoded. Then each is decoded in a worker thread, never on the event loop,
reduced to what retrieval needs (``image_side``: a JPEG decodes straight at 1/2
to 1/8 scale), one at a time, while it holds its share of the worker's
:class:`PixelBudget`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from fastapi import UploadFile

from rap.errors import InvalidInput, PayloadTooLarge
from rap.images import ImageData, LoadedImage, check_data
from rap.settings import Settings


class PixelBudget:
    """The pixels one worker decodes at once, over every request: an image waits for its share.

    A full-size decode is what costs memory (three or four bytes a pixel until
    it is reduced), so bounding the pixels being decoded at once bounds the
    worker's memory however many requests arrive. An image larger than the
    whole budget waits until it has it all to itself.
    """

    def __init__(self, pixels: int) -> None:
        self.total = pixels
        self.used = 0
        #: the most pixels held at once so far
        self.peak = 0
        self._changed = anyio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        pixels = min(pixels, self.total)
        async with self._changed:
            while self.used + pixels > self.total:
                await self._changed.wait()
            self.used += pixels
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._changed:
                    self.used -= pixels
                    self._changed.notify_all()


async def _read(upload: UploadFile, settings: Settings) -> bytes:
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{upload.filename or 'image'}: larger than the {settings.max_upload_bytes / 2**20:.1f} MiB limit")
    return data


def check_images(named: Sequence[tuple[str, bytes]], settings: Settings) -> list[ImageData]:
    """Every image checked by its header, and their pixels against the request's limit; nothing decoded."""
    if len(named) > settings.max_images_per_request:
        raise PayloadTooLarge(f"{len(named)} images; a request may send at most {settings.max_images_per_request}")
    checked = [
        check_data(data, label, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels) for label, data in named
    ]
    total = sum(image.pixels for image in checked)
    if total > settings.max_request_pixels:
        raise PayloadTooLarge(
            f"the images hold {total:,} pixels together; a request may send at most {settings.max_request_pixels:,}"
        )
    return checked


async def decode_images(images: Sequence[ImageData], settings: Settings, budget: PixelBudget) -> list[LoadedImage]:
    """Decode checked images one at a time in a worker thread, each reduced to ``image_side`` within the budget.

    The thread is not abandoned when the request is cancelled: the budget is
    given back only once the decode really ends.
    """
    decoded = []
    for image in images:
        async with budget.hold(image.decoding_pixels(settings.image_side)):
            decoded.append(await anyio.to_thread.run_sync(image.load, settings.image_side))
    return decoded


async def read_checked(uploads: Sequence[UploadFile], settings: Settings) -> list[ImageData]:
    """The uploaded images checked by their headers, none decoded; their names or declared types are not trusted."""
    if len(uploads) > settings.max_images_per_request:
        raise PayloadTooLarge(f"{len(uploads)} images; a request may send at most {settings.max_images_per_request}")
    named = [(upload.filename or "image", await _read(upload, settings)) for upload in uploads]
    return await anyio.to_thread.run_sync(check_images, named, settings)


async def read_images(uploads: Sequence[UploadFile], settings: Settings, budget: PixelBudget) -> list[LoadedImage]:
    """The uploaded images, checked all before any is decoded."""
    return await decode_images(await read_checked(uploads, settings), settings, budget)


async def read_image(upload: UploadFile, settings: Settings, budget: PixelBudget) -> LoadedImage:
    return (await read_images([upload], settings, budget))[0]


def bounded_text(value: str | None, what: str, settings: Settings) -> str | None:
    """``value`` if within ``max_text_chars``; a question is not a document."""
    if value is not None and len(value) > settings.max_text_chars:
        raise PayloadTooLarge(f"{what} is {len(value)} characters; the limit is {settings.max_text_chars}")
    return value


def parse_attributes(raw: str | None) -> dict[str, str]:
    """The ``attributes`` form field: a JSON object of strings."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"attributes must be a JSON object ({exc.msg})") from None
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        raise InvalidInput('attributes must be a JSON object of strings, e.g. {"age": "3"}')
    return {str(k): str(v) for k, v in value.items()}

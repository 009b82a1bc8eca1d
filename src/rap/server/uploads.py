"""Reading what a request sends: images (checked as the CLI checks files, under the service's
limits) and free text (bounded)."""

from __future__ import annotations

import json

from fastapi import UploadFile

from rap.errors import InvalidInput, PayloadTooLarge
from rap.images import LoadedImage, decode_image
from rap.settings import Settings


async def read_image(upload: UploadFile, settings: Settings) -> LoadedImage:
    """Decode one uploaded image; its name or declared type are not trusted, only its bytes."""
    data = await upload.read(settings.max_upload_bytes + 1)
    label = upload.filename or "image"
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{label}: larger than the {settings.max_upload_bytes / 2**20:.1f} MiB limit")
    return decode_image(data, label, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)


async def read_images(uploads: list[UploadFile], settings: Settings) -> list[LoadedImage]:
    if len(uploads) > settings.max_images_per_request:
        raise PayloadTooLarge(f"{len(uploads)} images; a request may send at most {settings.max_images_per_request}")
    return [await read_image(upload, settings) for upload in uploads]


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

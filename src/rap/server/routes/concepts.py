"""``/v1/concepts``: remember, list, show, edit and forget a user's concepts, and their images."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile
from PIL import Image

from rap import negatives
from rap.concepts import DEFAULT_CATEGORY, Concept, name_key
from rap.errors import ImageNotFound, InvalidInput
from rap.images import load_image
from rap.server.auth import CurrentUser, RuntimeDep
from rap.server.limits import run_blocking
from rap.server.routes import ERRORS
from rap.server.schemas import ConceptOut, ConceptPage, ConceptPatch, NegativesOut
from rap.server.uploads import parse_attributes, read_image, read_images

router = APIRouter(prefix="/v1/concepts", tags=["concepts"], responses=ERRORS)

Name = Annotated[str, Form(description="the handle you will type, e.g. bo (the model sees <bo>)")]
Images = Annotated[list[UploadFile], File(description="reference images (JPEG, PNG, WebP, HEIC, ...); one or more")]


@router.post("", status_code=201, response_model=ConceptOut, summary="Remember a new concept")
async def add_concept(
    user: CurrentUser,
    rt: RuntimeDep,
    name: Name,
    image: Images,
    info: Annotated[str, Form(description="a short description: '<bo> is my Shiba Inu'")] = "",
    category: Annotated[str, Form(description="what it is (dog, person, plush toy); the detector looks for it")] = DEFAULT_CATEGORY,
    attributes: Annotated[str | None, Form(description='a JSON object of strings, e.g. {"age": "3"}')] = None,
) -> dict:
    images = await read_images(image, rt.settings)
    attrs = parse_attributes(attributes)
    concept = await run_blocking(lambda: rt.store(user).add(name, images, info=info, category=category, attributes=attrs))
    return concept.to_dict()


def _cursor(concept: Concept) -> str:
    return base64.urlsafe_b64encode(name_key(concept.name).encode()).decode().rstrip("=")


def _after(cursor: str) -> str:
    try:
        after = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = ""
    if not after:
        raise InvalidInput("cursor is not one this service gave; start again without it")
    return after


@router.get(
    "",
    response_model=ConceptPage,
    responses={304: {"description": "the page is unchanged since the ETag given in If-None-Match"}},
    summary="List the concepts, a page at a time",
)
async def list_concepts(
    user: CurrentUser,
    rt: RuntimeDep,
    response: Response,
    limit: Annotated[int | None, Query(ge=1, description="concepts per page; at most the service's max_page_size")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    if_none_match: Annotated[str | None, Header(description="the ETag of a page seen before: 304 if it is unchanged")] = None,
) -> dict | Response:
    size = min(limit or rt.settings.max_page_size, rt.settings.max_page_size)
    after = _after(cursor) if cursor else None
    concepts = sorted(await run_blocking(lambda: rt.store(user).list()), key=lambda c: name_key(c.name))
    if after is not None:
        concepts = [c for c in concepts if name_key(c.name) > after]
    page = concepts[:size]
    more = len(concepts) > size
    body = {"concepts": [c.to_dict() for c in page], "next_cursor": _cursor(page[-1]) if more else None}
    # an ETag of the page's content, so a client polling for changes made elsewhere gets 304s while there are none
    etag = '"%s"' % hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return body


@router.get("/{name}", response_model=ConceptOut, summary="Show one concept")
async def get_concept(user: CurrentUser, rt: RuntimeDep, name: str) -> dict:
    return (await run_blocking(lambda: rt.store(user).get(name))).to_dict()


@router.patch("/{name}", response_model=ConceptOut, summary="Rename or edit a concept")
async def edit_concept(user: CurrentUser, rt: RuntimeDep, name: str, change: ConceptPatch) -> dict:
    attributes = change.attributes or {}

    def work() -> Concept:
        store = rt.store(user)
        concept = store.edit(
            name,
            rename=change.name,
            info=change.info,
            category=change.category,
            set_attributes={k: v for k, v in attributes.items() if v is not None},
            unset_attributes=[k for k, v in attributes.items() if v is None],
        )
        negatives.move(store, name, concept.name)
        return concept

    return (await run_blocking(work)).to_dict()


@router.delete("/{name}", status_code=204, summary="Forget a concept and its images")
async def remove_concept(user: CurrentUser, rt: RuntimeDep, name: str) -> Response:
    def work() -> None:
        store = rt.store(user)
        store.remove(name)
        negatives.forget(store, name)

    await run_blocking(work)
    return Response(status_code=204)


@router.post("/{name}/images", response_model=ConceptOut, summary="Add reference images to a concept")
async def add_images(user: CurrentUser, rt: RuntimeDep, name: str, image: Images) -> dict:
    images = await read_images(image, rt.settings)
    return (await run_blocking(lambda: rt.store(user).edit(name, add_images=images))).to_dict()


@router.post("/{name}/negatives", response_model=NegativesOut, summary="Not this concept: remember a region that is not it")
async def add_negative(
    user: CurrentUser, rt: RuntimeDep, name: str, image: Annotated[UploadFile, File(description="the wrongly matched region, cropped")]
) -> dict:
    picture = await read_image(image, rt.settings)

    def work() -> dict:
        store = rt.store(user)
        concept = store.get(name)
        return {"name": concept.name, "negatives": negatives.add(store, concept.name, store.embedder.embed([picture.image])[0])}

    return await run_blocking(work)


@router.get("/{name}/negatives", response_model=NegativesOut, summary="How many regions were marked as not this concept")
async def count_negatives(user: CurrentUser, rt: RuntimeDep, name: str) -> dict:
    def work() -> dict:
        store = rt.store(user)
        concept = store.get(name)
        return {"name": concept.name, "negatives": len(negatives.vectors(store, concept.name))}

    return await run_blocking(work)


def _image_file(concept: Concept, n: int) -> str:
    for image in concept.images:
        if image.id == n:
            return image.file
    raise ImageNotFound(f"{concept.name} has no image {n}; its images are {[i.id for i in concept.images]}")


@router.delete("/{name}/images/{n}", response_model=ConceptOut, summary="Remove one reference image")
async def remove_image(user: CurrentUser, rt: RuntimeDep, name: str, n: int) -> dict:
    def work() -> Concept:
        store = rt.store(user)
        _image_file(store.get(name), n)
        return store.edit(name, remove_images=[n])

    return (await run_blocking(work)).to_dict()


@router.get(
    "/{name}/images/{n}",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the image, or a JPEG thumbnail"}},
    summary="One reference image, or its thumbnail",
)
async def get_image(
    user: CurrentUser,
    rt: RuntimeDep,
    name: str,
    n: int,
    size: Annotated[int | None, Query(ge=16, description="longest side of a JPEG thumbnail, in pixels")] = None,
) -> Response:
    if size is not None and size > rt.settings.max_thumbnail_side:
        raise InvalidInput(f"size {size} is larger than the {rt.settings.max_thumbnail_side} px limit")

    def work() -> Response:
        store = rt.store(user)
        path = store.image_path(_image_file(store.get(name), n))
        if size is None:
            loaded = load_image(path)
            return Response(loaded.data, media_type=Image.MIME.get(loaded.format, "application/octet-stream"))
        image = load_image(path).image
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return Response(buffer.getvalue(), media_type="image/jpeg")

    return await run_blocking(work)

"""``/v1/photos``: each user's photo library (see :mod:`rap.server.photo_jobs`): upload, find a concept
in it, fetch and delete a photo, and name the subjects that recur in it.

A photo's id is the SHA-256 of its bytes. Another user's photo and a photo
nobody has answer the same 404, to the byte.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, File, Path, Query, Response, UploadFile
from pydantic import BaseModel, Field

from rap.concepts import DEFAULT_CATEGORY
from rap.errors import ConceptNotFound, ImageNotFound, InvalidInput
from rap.photos import PhotoLibrary, find_photos, name_group, suggest_groups
from rap.server.auth import CurrentUser, RuntimeDep
from rap.server.limits import run_blocking
from rap.server.photo_jobs import library_folder
from rap.server.routes import ERRORS
from rap.server.runtime import Runtime
from rap.server.schemas import ConceptOut, ErrorBody
from rap.server.uploads import read_checked
from rap.server.users import User

router = APIRouter(
    prefix="/v1/photos",
    tags=["photos"],
    responses=ERRORS | {501: {"model": ErrorBody, "description": "the photo library needs the embedded store (local:PATH) for now"}},
)

SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "HEIF": ".heic"}
"""The file name an upload is kept under, by the format its header says (the scan takes these suffixes)."""
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp", ".gif": "image/gif",
               ".tif": "image/tiff", ".heic": "image/heif"}  # fmt: skip

SAMPLE = 5
"""Photos shown of each suggested group (as ``rap photos suggest`` shows)."""

GroupNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="a group's number from GET /v1/photos/suggestions")]
PhotoId = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the photo's id: the SHA-256 of its bytes, in hex")]


class SuggestionNotFound(ConceptNotFound):
    """No suggested group of that number (among this user's last suggestions)."""


class PhotoState(BaseModel):
    id: str = Field(description="the SHA-256 of the photo's bytes")
    state: Literal["queued", "indexed", "failed"] = Field(description="queued for indexing, indexed (find sees it), or failed")
    reason: str | None = Field(None, description="why indexing failed (the photo is then removed)")


class Uploaded(BaseModel):
    photos: list[PhotoState]


class FoundOut(BaseModel):
    id: str
    size: list[int] = Field(description="[width, height] in pixels as stored")
    taken: str | None = Field(description="the EXIF date, ISO 8601")
    orientation: int = Field(description="the EXIF orientation")
    box: list[int] = Field(description="[x0, y0, x1, y1] of the best region, in the photo's pixels")
    distance: float
    score: float = Field(description="calibrated score: lower is surer")
    region: str
    match: str = Field(description="the match label of retrieval's decision")


class FoundPage(BaseModel):
    photos: list[FoundOut]


class SampleOut(BaseModel):
    id: str
    box: list[int]


class GroupOut(BaseModel):
    group: int = Field(description="its number, for POST /v1/photos/suggestions/{group}/name")
    space: str = Field(description="face or image")
    photos: int
    sample: list[SampleOut]


class Suggestions(BaseModel):
    groups: list[GroupOut]


class NameGroup(BaseModel):
    name: str = Field(description="the new concept's handle, e.g. grandma")
    category: str = Field(DEFAULT_CATEGORY, description="what it is (person, dog, mug)")
    info: str = Field("", description="what to remember about it")


def _file(folder: FilePath, photo_id: str) -> FilePath | None:
    return next((p for p in folder.glob(f"{photo_id}.*") if p.suffix in MEDIA_TYPES), None)


def _state(rt: Runtime, user: User, library: PhotoLibrary, photo_id: str) -> dict:
    """A photo's state; 404 when the user has no such photo."""
    reason = rt.photo_jobs.failed.get((user.id, photo_id))
    file = _file(library_folder(rt.store(user)), photo_id)
    if file is None:
        if reason is None:
            raise ImageNotFound("no such photo in your library")
        return {"id": photo_id, "state": "failed", "reason": reason}
    if str(file) in library.known():
        return {"id": photo_id, "state": "indexed", "reason": None}
    if not rt.photo_jobs.busy(user):  # kept before a restart, never indexed: index it now
        rt.photo_jobs.queue(user)
    return {"id": photo_id, "state": "queued", "reason": None}


@router.post("", status_code=202, response_model=Uploaded, summary="Add photos to your library; they are indexed in the background")
async def upload_photos(
    user: CurrentUser,
    rt: RuntimeDep,
    image: Annotated[list[UploadFile], File(description="photos (JPEG, PNG, WebP, HEIC, ...); one or more")],
) -> dict:
    folder = library_folder(await run_blocking(lambda: rt.store(user)))  # 501 before anything is read
    checked = await read_checked(image, rt.settings)

    def keep() -> list[dict]:
        folder.mkdir(parents=True, exist_ok=True)
        ids = []
        # the library is made here, before its first indexing run opens it from another thread
        with rt.photo_jobs.library(user) as library:
            for picture in checked:
                photo_id = hashlib.sha256(picture.data).hexdigest()
                if _file(folder, photo_id) is None:
                    part = folder / f".{photo_id}.part"  # not an image suffix: the scan never sees it half-written
                    part.write_bytes(picture.data)
                    os.replace(part, folder / f"{photo_id}{SUFFIXES.get(picture.format, '.jpg')}")
                rt.photo_jobs.failed.pop((user.id, photo_id), None)
                ids.append(photo_id)
            rt.photo_jobs.queue(user)
            return [_state(rt, user, library, photo_id) for photo_id in ids]

    return {"photos": await run_blocking(keep)}


@router.get("", response_model=FoundPage, summary="The photos a concept appears in, best first")
async def find(
    user: CurrentUser,
    rt: RuntimeDep,
    concept: Annotated[str, Query(description="the concept's name, e.g. bo")],
    limit: Annotated[int | None, Query(ge=1, description="most photos to list (default: photos_limit)")] = None,
) -> dict:
    def work() -> list[dict]:
        with rt.photo_jobs.library(user) as library:
            folder = library_folder(rt.store(user))
            found = find_photos(library, rt.photo_jobs.retriever(user), concept, limit=limit or rt.settings.photos_limit)
        # only uploads, and none deleted while a run was indexing it (that run's successor forgets it)
        kept = [f.to_dict() for f in found if FilePath(f.photo.path).parent == folder and FilePath(f.photo.path).exists()]
        return [{k: v for k, v in item.items() if k != "path"} | {"id": FilePath(str(item["path"])).stem} for item in kept]

    return {"photos": await run_blocking(work)}


@router.get("/suggestions", response_model=Suggestions, summary="Subjects that recur in your photos and are none of your concepts")
async def suggestions(
    user: CurrentUser,
    rt: RuntimeDep,
    min_photos: Annotated[int | None, Query(ge=2, description="fewest photos a subject must recur in (default: photos_min_photos)")] = None,
) -> dict:
    def work() -> list[dict]:
        with rt.photo_jobs.library(user) as library:
            groups = suggest_groups(library, rt.photo_jobs.retriever(user), min_photos or rt.settings.photos_min_photos)
        out = []
        for group in groups:
            body = group.to_dict(SAMPLE)
            body["sample"] = [{"id": FilePath(str(s["path"])).stem, "box": s["box"]} for s in body["sample"]]  # type: ignore[attr-defined]
            out.append(body)
        return out

    return {"groups": await run_blocking(work)}


@router.post("/suggestions/{group}/name", status_code=201, response_model=ConceptOut, summary="Make a suggested group a concept")
async def name_suggestion(user: CurrentUser, rt: RuntimeDep, group: GroupNumber, body: NameGroup) -> dict:
    def work() -> dict:
        with rt.photo_jobs.library(user) as library:
            try:
                library.group(group)
            except InvalidInput as exc:
                raise SuggestionNotFound(exc.message) from None
            concept = name_group(
                library, rt.photo_jobs.retriever(user), group, body.name,
                category=body.category, references=rt.settings.photos_references, info=body.info,
            )  # fmt: skip
        return concept.to_dict()

    return await run_blocking(work)


@router.get("/{photo_id}/state", response_model=PhotoState, summary="Whether a photo is indexed yet")
async def photo_state(user: CurrentUser, rt: RuntimeDep, photo_id: PhotoId) -> dict:
    def work() -> dict:
        with rt.photo_jobs.library(user) as library:
            return _state(rt, user, library, photo_id)

    return await run_blocking(work)


@router.get(
    "/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the photo as uploaded"}},
    summary="One photo of your library",
)
async def get_photo(user: CurrentUser, rt: RuntimeDep, photo_id: PhotoId) -> Response:
    def work() -> Response:
        file = _file(library_folder(rt.store(user)), photo_id)
        if file is None:
            raise ImageNotFound("no such photo in your library")
        return Response(file.read_bytes(), media_type=MEDIA_TYPES[file.suffix])

    return await run_blocking(work)


@router.delete("/{photo_id}", status_code=204, summary="Remove a photo from your library")
async def delete_photo(user: CurrentUser, rt: RuntimeDep, photo_id: PhotoId) -> Response:
    def work() -> None:
        with rt.photo_jobs.library(user) as library:
            file = _file(library_folder(rt.store(user)), photo_id)
            if file is None:
                raise ImageNotFound("no such photo in your library")
            file.unlink()
            library.forget([str(file)])
        if rt.photo_jobs.busy(user):  # a run going may have looked at it already: the next one forgets it
            rt.photo_jobs.queue(user)

    await run_blocking(work)
    return Response(status_code=204)


"""The API's request and response bodies, as the OpenAPI document states them.

They mirror the ``to_dict()`` of the core's results (what the CLI's ``--json``
prints), so a response is the same JSON whichever way it is asked for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="what went wrong, for programs: concept_not_found, invalid_image, ...")
    message: str = Field(description="what went wrong and what to do, for people")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ImageOut(BaseModel):
    id: int
    sha256: str
    width: int
    height: int
    face_box: list[int] | None = None


class ConceptOut(BaseModel):
    name: str
    token: str = Field(description="how the model sees the name: <bo>")
    info: str
    category: str
    attributes: dict[str, str]
    images: list[ImageOut]
    created_at: datetime
    updated_at: datetime


class NegativesOut(BaseModel):
    name: str
    negatives: int = Field(description="regions marked as not this concept; retrieval no longer matches regions nearer to them")


class ConceptPage(BaseModel):
    concepts: list[ConceptOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class ConceptPatch(BaseModel):
    """A change to a concept; what is left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="a new name")
    info: str | None = None
    category: str | None = None
    attributes: dict[str, str | None] | None = Field(None, description="attributes to set; a null value removes that attribute")


class RetrievedOut(BaseModel):
    name: str
    category: str
    via: Literal["text", "image"]
    match: bool = Field(description="whether the retriever labels it present in the photo; false: a weak candidate, or no visual evidence")
    space: Literal["image", "face"] | None = Field(description="the space of its visual evidence; null: none")
    distance: float | None
    score: float | None
    box: list[int] | None
    region: str | None


class RegionOut(BaseModel):
    box: list[int]
    label: str | None
    score: float | None
    source: str


class RetrievalOut(BaseModel):
    image: str | None = Field(description="the uploaded file's name, null for a text-only query")
    concepts: list[RetrievedOut]
    regions: list[RegionOut]
    image_size: list[int] | None


class AnswerOut(BaseModel):
    answer: str
    concepts: list[RetrievedOut] = Field(description="the concepts the prompt held, and why each was retrieved")
    model: str


class RecognitionOut(BaseModel):
    name: str
    present: bool | None = Field(description="null when the model's reply is neither yes nor no")
    mode: Literal["model", "retriever"]
    reply: str | None
    match: RetrievedOut


class LocationOut(BaseModel):
    name: str
    found: bool
    box: list[int] | None
    mode: Literal["model", "retriever"]
    reply: str | None
    match: RetrievedOut


class UserOut(BaseModel):
    user: str


class Health(BaseModel):
    status: str

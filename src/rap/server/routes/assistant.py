"""``/v1/retrieve``, ``ask``, ``caption``, ``recognize``, ``locate``: the CLI's commands, with the
same semantics and the same JSON as their ``--json``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from rap.assistant import CAPTION_QUESTION
from rap.errors import InvalidInput
from rap.images import LoadedImage
from rap.server.auth import CurrentUser, RuntimeDep
from rap.server.errors import upstream
from rap.server.limits import run_blocking
from rap.server.routes import BUSY, ERRORS
from rap.server.runtime import Runtime
from rap.server.schemas import AnswerOut, LocationOut, RecognitionOut, RetrievalOut
from rap.server.streaming import event_stream, generate
from rap.server.uploads import bounded_text, read_image
from rap.server.users import User

router = APIRouter(prefix="/v1", tags=["assistant"], responses=ERRORS)

OptionalImage = Annotated[UploadFile | None, File(description="the photo (optional)")]
RequiredImage = Annotated[UploadFile, File(description="the photo")]
K = Annotated[int | None, Form(ge=1, le=100, description="concepts to retrieve; default: the service's top_k")]
Stream = Annotated[bool, Form(description="stream the reply as Server-Sent Events: token events, then a done event with the concepts")]
ConceptName = Annotated[str, Form(description="the concept to look for")]
STREAMED = {200: {"content": {"application/json": {}, "text/event-stream": {}}, "description": "the answer, or its stream"}}


async def _image(upload: UploadFile | None, rt: Runtime) -> LoadedImage | None:
    return await read_image(upload, rt.settings, rt.pixels) if upload is not None else None


@router.post("/retrieve", response_model=RetrievalOut, summary="Which of my concepts are in this photo or text?")
async def retrieve(
    user: CurrentUser,
    rt: RuntimeDep,
    image: OptionalImage = None,
    text: Annotated[str | None, Form(description="the user's text; concepts named in it are always retrieved")] = None,
    k: K = None,
) -> dict:
    text = bounded_text(text, "text", rt.settings)
    picture = await _image(image, rt)
    if picture is None and not text:
        raise InvalidInput("give an image or a text")
    retrieval = await run_blocking(lambda: rt.assistant(user, k).retriever.retrieve(picture, text=text))
    return {"image": image.filename if image is not None else None} | retrieval.to_dict()


async def _answer(rt: Runtime, user: User, question: str, picture: LoadedImage | None, k: int | None, stream: bool):
    if not question.strip():
        raise InvalidInput("the question is empty")
    conversation = (await run_blocking(lambda: rt.assistant(user, k))).chat(picture)
    lease = await rt.queue.acquire()
    if stream:
        return event_stream(conversation, question, lease, rt.metrics)
    return (await generate(conversation, question, lease, rt.metrics)).to_dict()


@router.post("/ask", response_model=AnswerOut, responses=BUSY | STREAMED, summary="Ask about my concepts, with or without a photo")
async def ask(
    user: CurrentUser,
    rt: RuntimeDep,
    question: Annotated[str, Form(description="the question; name a concept (bo or <bo>) to bring it in")],
    image: OptionalImage = None,
    k: K = None,
    stream: Stream = False,
) -> dict | StreamingResponse:
    question = bounded_text(question, "question", rt.settings) or ""
    return await _answer(rt, user, question, await _image(image, rt), k, stream)


@router.post("/caption", response_model=AnswerOut, responses=BUSY | STREAMED, summary="A caption that calls my concepts by name")
async def caption(user: CurrentUser, rt: RuntimeDep, image: RequiredImage, k: K = None, stream: Stream = False) -> dict | StreamingResponse:
    return await _answer(rt, user, CAPTION_QUESTION, await _image(image, rt), k, stream)


async def _ask_about(rt: Runtime, user: User, k: int | None, image: UploadFile, mode: str, question: Callable[..., Any]) -> dict:
    """``question(assistant, picture, mode)`` answered: by the retriever at once, or by the model in a generation slot."""
    picture = await _image(image, rt)
    assistant = await run_blocking(lambda: rt.assistant(user, k))
    if mode == "retriever":
        return (await run_blocking(lambda: question(assistant, picture, "retriever"))).to_dict()
    lease = await rt.queue.acquire()

    def work() -> dict:
        with rt.metrics.generation.time(), upstream():
            return question(assistant, picture, "model").to_dict()

    return await run_blocking(work, lease)


@router.post("/recognize", response_model=RecognitionOut, responses=BUSY, summary="Is this concept in the photo?")
async def recognize(
    user: CurrentUser,
    rt: RuntimeDep,
    image: RequiredImage,
    name: ConceptName,
    mode: Annotated[Literal["model", "retriever"], Form(description="ask the model, or decide by calibrated distance")] = "model",
    k: K = None,
) -> dict:
    return await _ask_about(rt, user, k, image, mode, lambda assistant, picture, how: assistant.recognize(picture, name, how))


@router.post("/locate", response_model=LocationOut, responses=BUSY, summary="Where is this concept in the photo?")
async def locate(
    user: CurrentUser,
    rt: RuntimeDep,
    image: RequiredImage,
    name: ConceptName,
    mode: Annotated[
        Literal["model", "retriever"], Form(description="ask the model for the box, or take the best-matching region")
    ] = "retriever",
    k: K = None,
) -> dict:
    return await _ask_about(rt, user, k, image, mode, lambda assistant, picture, how: assistant.locate(picture, name, how))

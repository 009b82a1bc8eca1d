"""``/v1/retrieve``, ``ask``, ``caption``, ``recognize``, ``locate``: the CLI's commands, with the
same semantics and the same JSON as their ``--json``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from rap.assistant import CAPTION_QUESTION
from rap.errors import InvalidInput
from rap.images import LoadedImage
from rap.server.auth import CurrentUser, RuntimeDep
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
    return await read_image(upload, rt.settings) if upload is not None else None


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


@router.post("/recognize", response_model=RecognitionOut, responses=BUSY, summary="Is this concept in the photo?")
async def recognize(
    user: CurrentUser,
    rt: RuntimeDep,
    image: RequiredImage,
    name: ConceptName,
    mode: Annotated[Literal["model", "retriever"], Form(description="ask the model, or decide by calibrated distance")] = "model",
    k: K = None,
) -> dict:
    picture = await _image(image, rt)
    assistant = await run_blocking(lambda: rt.assistant(user, k))
    if mode == "retriever":
        return (await run_blocking(lambda: assistant.recognize(picture, name, "retriever"))).to_dict()
    lease = await rt.queue.acquire()

    def work() -> dict:
        with rt.metrics.generation.time():
            return assistant.recognize(picture, name, "model").to_dict()

    return await run_blocking(work, lease)


@router.post("/locate", response_model=LocationOut, summary="Where is this concept in the photo?")
async def locate(user: CurrentUser, rt: RuntimeDep, image: RequiredImage, name: ConceptName, k: K = None) -> dict:
    picture = await _image(image, rt)
    return (await run_blocking(lambda: rt.assistant(user, k).locate(picture, name))).to_dict()

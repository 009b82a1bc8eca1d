"""``POST /v1/chat/completions``: OpenAI's chat API, so any OpenAI client or chat UI becomes a
personalized assistant; ``GET /v1/models`` names the one model it answers with.

The whole history arrives with each request (the API is stateless). rap keeps
one photo per conversation, as its assistant does: the latest image in the
messages (``image_url`` parts, as data URLs: the service fetches no URLs).
Earlier exchanges are replayed, retrieving as they did, then the last user
message is answered. System messages are ignored: the paper's prompt is the
system prompt. The concepts used come back in ``rap_concepts``, on the
response, or, streamed, on the first chunk (as soon as retrieval returns,
before the first token) and again on the last.

``model`` may be left out or name the model ``/v1/models`` lists; any other is
refused (404 ``model_not_found``) rather than silently answered by another.
``usage`` is estimated at four characters a token: rap's backends (a local
model, llama.cpp, a remote API) do not all report counts.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rap.assistant import Answer, Conversation
from rap.errors import InvalidInput, PayloadTooLarge, RapError
from rap.generation import GenerationOptions
from rap.images import LoadedImage, decode_image
from rap.server.auth import CurrentUser, RuntimeDep
from rap.server.errors import error_body, error_code
from rap.server.limits import run_blocking
from rap.server.routes import BUSY, ERRORS
from rap.server.runtime import Runtime
from rap.server.schemas import RetrievedOut
from rap.server.streaming import generate, pieces
from rap.server.users import User

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERRORS)


class ImageURL(BaseModel):
    url: str = Field(description="a data URL: data:image/jpeg;base64,...")
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """The fields of OpenAI's request that rap honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="the model /v1/models lists (the default); any other is refused")
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: bool = False
    max_tokens: Annotated[int | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0.0, le=2.0)] = None


class ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ChoiceMessage
    finish_reason: Literal["stop"] = "stop"


class Usage(BaseModel):
    prompt_tokens: int = Field(description="estimated at four characters a token, concept descriptions included")
    completion_tokens: int = Field(description="estimated at four characters a token")
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    rap_concepts: list[RetrievedOut] = Field(description="the concepts the prompt held, and why each was retrieved")


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rap"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelNotFound(RapError):
    """The client asked for a model this service does not answer with."""

    http_status = 404


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _usage(request: ChatRequest, answer: Answer) -> dict[str, int]:
    """Token counts, estimated from the characters the prompt and reply hold (see the module's note)."""
    prompt = sum(_tokens(_text(m)) for m in request.messages) + sum(_tokens(c.concept.describe()) for c in answer.concepts)
    completion = _tokens(answer.text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _text(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    return "\n".join(part.text or "" for part in message.content or [] if part.type == "text")


def _data_url(url: str, rt: Runtime) -> LoadedImage:
    head, comma, payload = url.partition(",")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise InvalidInput("images must be data URLs (data:image/jpeg;base64,...); the service fetches no URLs")
    if len(payload) > rt.settings.max_upload_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(f"an image is larger than the {rt.settings.max_upload_bytes / 2**20:.1f} MiB limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("an image data URL is not valid base64") from None
    return decode_image(data, "image_url", max_bytes=rt.settings.max_upload_bytes, max_pixels=rt.settings.max_image_pixels)


def _dialogue(request: ChatRequest, rt: Runtime) -> tuple[str | None, list[tuple[str, str]], str]:
    """The latest image's data URL, the past (question, reply) pairs, and the question to answer."""
    image: str | None = None
    exchanges: list[tuple[str, str]] = []
    pending: list[str] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            continue
        if message.role == "assistant":
            if pending:
                exchanges.append(("\n".join(pending), _text(message)))
                pending = []
            continue
        pending.append(_text(message))
        for part in message.content if isinstance(message.content, list) else []:
            if part.type == "image_url" and part.image_url is not None:
                image = part.image_url.url
    question = "\n".join(p for p in pending if p.strip())
    if not question:
        raise InvalidInput("the last message must be the user's, with some text")
    for text in [question, *(q + r for q, r in exchanges)]:
        if len(text) > rt.settings.max_text_chars * 4:
            raise PayloadTooLarge(f"a message is longer than the service's {rt.settings.max_text_chars * 4} character limit")
    return image, exchanges, question


def _options(request: ChatRequest, rt: Runtime) -> GenerationOptions:
    """The client's length and temperature, within the service's own ``max_new_tokens``."""
    wanted = request.max_completion_tokens or request.max_tokens or rt.settings.max_new_tokens
    temperature = rt.settings.temperature if request.temperature is None else request.temperature
    return GenerationOptions(max_new_tokens=min(wanted, rt.settings.max_new_tokens), temperature=temperature)


def _prepare(rt: Runtime, user: User, request: ChatRequest) -> tuple[Conversation, str]:
    if request.model not in (None, "", rt.settings.generator_spec):
        raise ModelNotFound(f"this service answers with {rt.settings.generator_spec!r} only, not {request.model!r} (GET /v1/models lists it)")
    image_url, exchanges, question = _dialogue(request, rt)
    assistant = rt.assistant(user)
    assistant.options = _options(request, rt)
    conversation = assistant.chat(_data_url(image_url, rt) if image_url else None)
    for past_question, reply in exchanges:
        conversation.replay(past_question, reply)
    return conversation, question


def _completion(request: ChatRequest, answer: Answer, model: str, completion_id: str, created: int) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}],
        "usage": _usage(request, answer),
        "rap_concepts": [c.to_dict() for c in answer.concepts],
    }


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses=BUSY | {200: {"content": {"application/json": {}, "text/event-stream": {}}, "description": "the completion, or its chunks"}},
    summary="OpenAI-compatible chat, personalized with the user's concepts",
)
async def chat_completions(user: CurrentUser, rt: RuntimeDep, request: ChatRequest) -> dict | StreamingResponse:
    conversation, question = await run_blocking(lambda: _prepare(rt, user, request))
    lease = await rt.queue.acquire()
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    model = rt.settings.generator_spec  # what /v1/models lists, and so what a client may ask for by name
    if not request.stream:
        return _completion(request, await generate(conversation, question, lease, rt.metrics), model, completion_id, created)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def chunks() -> AsyncIterator[str]:
        try:
            async for item in pieces(conversation, question, lease, rt.metrics):
                if isinstance(item, list):  # retrieval returned: the evidence goes first
                    yield chunk({"role": "assistant", "content": ""}, rap_concepts=[c.to_dict() for c in item])
                elif isinstance(item, Answer):
                    yield chunk({}, "stop", rap_concepts=[c.to_dict() for c in item.concepts], usage=_usage(request, item))
                else:
                    yield chunk({"content": item})
        except RapError as exc:
            yield f"data: {json.dumps(error_body(error_code(exc), exc.message))}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/models", response_model=ModelList, summary="The model this service answers with (for OpenAI clients)")
async def models(_: CurrentUser, rt: RuntimeDep) -> dict:
    return {"object": "list", "data": [{"id": rt.settings.generator_spec, "object": "model", "created": 0, "owned_by": "rap"}]}

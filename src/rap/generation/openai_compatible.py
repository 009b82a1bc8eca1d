"""``openai:<model>``: any OpenAI-compatible chat-completions server that takes images.

vLLM, SGLang, Ollama, LM Studio and the hosted APIs all speak the same
protocol, so one backend serves them all: rap runs retrieval locally and sends
the personalized prompt (query image, concept images, their names and info,
the question) to ``{base_url}/chat/completions`` with ``stream: true``, then
yields the reply as the server-sent events arrive. The official ``openai`` SDK
speaks the protocol (requests, event stream, typed errors); this module maps its
errors to rap's one-line errors that say what to change.

Each user turn becomes one message whose content lists text and
``image_url`` items in the order of :attr:`Turn.parts
<rap.generation.prompt.Turn.parts>`, so the server's own chat template places
the images exactly where the paper's prompt puts them. Images travel inline as
data URLs, downscaled first, since a server never sees rap's files.

The API key is a secret: it goes only into the ``Authorization`` header and is
scrubbed from anything rap shows, including error text a server echoes back.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import httpx
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from rap._imports import require
from rap.errors import BackendError, ConfigError, InvalidInput, RapError
from rap.generation import GENERATORS
from rap.generation.base import GenerationOptions, Generator, validated_options
from rap.generation.prompt import Turn

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BASE_URL_VARIABLES = ("RAP_OPENAI_BASE_URL", "OPENAI_BASE_URL")
API_KEY_VARIABLES = ("RAP_OPENAI_API_KEY", "OPENAI_API_KEY")


def _first_env(names: Sequence[str], default: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return default


class OpenAICompatibleOptions(BaseModel):
    """Settings of the ``openai`` backend; the environment supplies the endpoint and key."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    base_url: str = Field(
        default_factory=lambda: _first_env(BASE_URL_VARIABLES, DEFAULT_BASE_URL),
        description="server root, usually ending in /v1; default $RAP_OPENAI_BASE_URL, "
        f"else $OPENAI_BASE_URL, else {DEFAULT_BASE_URL}",
    )
    api_key: SecretStr = Field(
        default_factory=lambda: SecretStr(_first_env(API_KEY_VARIABLES, "")),
        description="bearer token; default $RAP_OPENAI_API_KEY, else $OPENAI_API_KEY; "
        "empty for local servers that need none",
    )
    timeout: float = Field(
        default=60.0, gt=0, le=3600, description="seconds to wait to connect, and for each piece of the reply"
    )
    max_concepts: int = Field(default=3, ge=0, le=16, description="retrieved concepts put in the prompt")
    max_images: int | None = Field(
        default=None, ge=1, description="images the server accepts per request (vLLM: --limit-mm-per-prompt)"
    )
    max_image_side: int | None = Field(
        default=1024, ge=32, description="longer image sides are scaled down to this; None sends full size"
    )
    max_retries: int = Field(
        default=0, ge=0, le=10,
        description="the SDK's own retries, with backoff, of connection errors, 408, 409, 429 and 5xx; "
        "rap data build's annotator retries on its own",
    )
    image_format: Literal["jpeg", "png"] = Field(default="jpeg", description="how images are encoded")
    system: str | None = Field(default=None, description="system prompt, if any")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:8000/v1")
        return value


@GENERATORS.register(
    "openai",
    help="any OpenAI-compatible chat-completions server with image input (vLLM, SGLang, Ollama, "
    "LM Studio, hosted APIs); the argument is the model name the server knows; "
    "endpoint and key from RAP_OPENAI_BASE_URL and RAP_OPENAI_API_KEY",
    default_argument="gpt-4o-mini",
)
def create(argument: str, **options: object) -> OpenAICompatible:
    settings = validated_options(OpenAICompatibleOptions, options, "openai")
    return OpenAICompatible(argument, settings)


class OpenAICompatible(Generator):
    """Streams replies from ``{base_url}/chat/completions``."""

    def __init__(self, model: str, options: OpenAICompatibleOptions | None = None) -> None:
        if not model.strip():
            raise InvalidInput("name the model the server should run, e.g. openai:gpt-4o-mini")
        self.model = model.strip()
        self.id = f"openai:{self.model}"
        self.options = options or OpenAICompatibleOptions()
        self.max_concepts = self.options.max_concepts
        self.max_images = self.options.max_images

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, base_url={_shown(self.options.base_url)!r})"

    @property
    def url(self) -> str:
        return f"{self.options.base_url}/chat/completions"

    def messages(self, conversation: Sequence[Turn]) -> list[dict[str, Any]]:
        """The conversation as chat messages: answered turns become user/assistant pairs."""
        messages: list[dict[str, Any]] = []
        if self.options.system:
            messages.append({"role": "system", "content": self.options.system})
        for turn in conversation:
            content = [
                {"type": "text", "text": part}
                if isinstance(part, str)
                else {"type": "image_url", "image_url": {"url": self._data_url(part)}}
                for part in turn.parts
                if not (isinstance(part, str) and not part)
            ]
            messages.append({"role": "user", "content": content})
            if turn.reply is not None:
                messages.append({"role": "assistant", "content": turn.reply})
        return messages

    def request_body(self, conversation: Sequence[Turn], options: GenerationOptions) -> dict[str, Any]:
        """The arguments of ``chat.completions.create``: what goes over the wire."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(conversation),
            "stream": True,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "max_tokens": options.max_new_tokens,
        }
        if options.seed is not None:
            body["seed"] = options.seed
        return body

    def _client(self, openai: Any) -> Any:
        """The ``openai`` SDK's client for this server."""
        return openai.OpenAI(
            api_key=self.options.api_key.get_secret_value() or "unused",  # the SDK insists on one
            base_url=self.options.base_url,
            timeout=self.options.timeout,
            max_retries=self.options.max_retries,
        )

    def _stream(self, conversation: Sequence[Turn], options: GenerationOptions) -> Iterator[str]:
        openai = require("openai", "offline")
        body = self.request_body(conversation, options)
        if not self.options.api_key.get_secret_value():  # local servers get no Authorization header
            from openai._types import Omit  # the SDK's documented way to drop a header (1.x exports it only here)

            body["extra_headers"] = {"Authorization": Omit()}
        seconds = self.options.timeout
        try:
            with self._client(openai) as client, client.chat.completions.with_streaming_response.create(
                **body
            ) as response:
                if response.headers.get("content-type", "").startswith("application/json"):
                    # a server that ignored ``stream: true`` and sent the whole completion
                    text = _whole_reply(response.json(), self._malformed)
                    if text:
                        yield text
                    return
                yield from self._pieces(response.parse())
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            if isinstance(exc.__cause__, httpx.ConnectTimeout) or isinstance(exc, httpx.ConnectTimeout):
                raise BackendError(f"could not connect to {_shown(self.url)} within {seconds:g} s") from None
            raise BackendError(
                f"{_shown(self.url)} sent nothing for {seconds:g} s; the model may still be loading "
                "or be slow: raise the timeout option"
            ) from None
        except openai.APIConnectionError as exc:
            cause = self._scrub(str(exc.__cause__ or "")) or "connection failed"
            raise BackendError(
                f"cannot reach {_shown(self.url)} ({_clip(cause)}); "
                "is the server running? Set base_url or RAP_OPENAI_BASE_URL"
            ) from None
        except openai.APIError as exc:  # an error event in the stream
            raise BackendError(f"{_shown(self.url)} failed mid-reply: {self._scrub(_clip(exc.message))}") from None
        except httpx.HTTPError as exc:
            raise BackendError(
                f"the connection to {_shown(self.url)} failed mid-reply "
                f"({type(exc).__name__}: {self._scrub(str(exc))})"
            ) from None
        except ValueError as exc:  # the SDK's JSON decoding of an event
            raise self._malformed(f"a chunk is not JSON ({exc})") from None

    def _pieces(self, chunks: Iterable[Any]) -> Iterator[str]:
        """The text in each chunk of the stream, checking the stream is what it claims.

        The SDK builds chunks without validating them, so a server that sends
        JSON of another shape is caught here rather than as an AttributeError.
        """
        finished = False
        for chunk in chunks:
            choices = getattr(chunk, "choices", None)
            if not isinstance(choices, list):
                raise self._malformed(f"a chunk has no choices list: {_clip(repr(chunk))!r}")
            if not choices:  # usage reports carry no text
                continue
            finished = finished or any(getattr(choice, "finish_reason", None) for choice in choices)
            content = getattr(getattr(choices[0], "delta", None), "content", None)
            if content is not None and not isinstance(content, str):
                raise self._malformed(f"content is not text: {_clip(repr(content))!r}")
            if content:
                yield content
        if not finished:
            raise self._malformed("the stream ended before the reply was finished (or was no event stream)")

    def _malformed(self, what: str) -> BackendError:
        return BackendError(
            f"{_shown(self.url)} sent a malformed stream: {self._scrub(what)}; "
            "is base_url an OpenAI-compatible API (usually ending in /v1)?"
        )

    def _status_error(self, exc: Any) -> RapError:
        """Turn the SDK's typed status error into an error that says what to change."""
        import openai

        status = exc.status_code
        said = f"{status}: {self._server_message(exc.response.text)}"
        where = _shown(self.url)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            fix = (
                "check RAP_OPENAI_API_KEY (or the api_key option)"
                if self.options.api_key.get_secret_value()
                else "no API key is set: export RAP_OPENAI_API_KEY=<key>"
            )
            return ConfigError(f"{where} refused the API key ({said}); {fix}")
        if isinstance(exc, openai.NotFoundError):
            return ConfigError(
                f"{where} answered {said}; model {self.model!r} was not found on the server, "
                "or base_url is wrong (it usually ends in /v1)"
            )
        if status == 413:  # the SDK has no class of its own for it
            return InvalidInput(f"{where} found the request too large ({said}); lower max_image_side")
        if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)):
            return InvalidInput(
                f"{where} rejected the request ({said}); the model may not take images, "
                "or not this many (see max_images)"
            )
        if isinstance(exc, openai.RateLimitError):
            return BackendError(f"{where} is rate-limiting or out of quota ({said}); try again later")
        return BackendError(f"{where} failed ({said})")

    def _server_message(self, body: str) -> str:
        """The message in an error body: OpenAI's ``{"error": {"message": ...}}`` and its kin."""
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        message: object = body
        if isinstance(parsed, dict):
            message = parsed.get("error", parsed)
            if isinstance(message, dict):
                message = message.get("message") or message.get("detail") or message
        text = message if isinstance(message, str) else json.dumps(message)
        return self._scrub(_clip(text)) or "no message"

    def _data_url(self, image: Image.Image) -> str:
        """The image inline, scaled down to ``max_image_side`` and re-encoded."""
        side = self.options.max_image_side
        if side is not None and max(image.size) > side:
            image = image.copy()
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if self.options.image_format == "png":
            alpha = "A" in image.getbands() or "transparency" in image.info
            image.convert("RGBA" if alpha else "RGB").save(buffer, "PNG")
        else:
            image.convert("RGB").save(buffer, "JPEG", quality=90)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        return f"data:image/{self.options.image_format};base64,{encoded}"

    def _scrub(self, text: str) -> str:
        """``text`` without the API key, should a server or library have echoed it."""
        key = self.options.api_key.get_secret_value()
        return text.replace(key, "***") if key else text


def _whole_reply(data: object, malformed: Callable[[str], BackendError]) -> str:
    """``choices[0].message.content`` of a whole (unstreamed) completion."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        raise malformed(f"the reply has no choices list: {_clip(json.dumps(data))!r}")
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise malformed(f"content is not text: {_clip(json.dumps(content))!r}")
    return content or ""


def _shown(url: str) -> str:
    """``url`` as safe to show: no user info or query, where credentials sometimes hide."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

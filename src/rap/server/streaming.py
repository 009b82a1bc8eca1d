"""Running one answer: in a generation slot, whole or streamed as Server-Sent Events.

A stream is one ``event: retrieval`` (``{"concepts": [...]}``, the concepts
the prompt holds, sent before the first token), ``event: token`` events (``{"text": ...}``), then one ``event:
done`` carrying the whole answer with the concepts it used (the same JSON as
the non-streamed answer), or ``event: error`` with the usual error body. Each
piece is decoded in a worker thread; when the client goes away, the stream
stops at the next piece and its generation slot is freed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from fastapi.responses import StreamingResponse

from rap.assistant import Answer, Conversation
from rap.errors import RapError
from rap.retrieval import RetrievedConcept
from rap.server.errors import error_body, error_code
from rap.server.limits import Lease, run_blocking
from rap.server.metrics import Metrics


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def generate(conversation: Conversation, question: str, lease: Lease, metrics: Metrics) -> Answer:
    """The whole answer, generated in the slot ``lease`` holds."""

    def work() -> Answer:
        with metrics.generation.time():
            return conversation.ask(question)

    return await run_blocking(work, lease)


async def pieces(
    conversation: Conversation, question: str, lease: Lease, metrics: Metrics
) -> AsyncIterator[list[RetrievedConcept] | str | Answer]:
    """The concepts retrieved, then the reply piece by piece, then the :class:`Answer`;
    the slot is released however it ends."""
    stream: Iterator[str] | None = None
    started = time.perf_counter()
    try:
        retrieved, stream = await anyio.to_thread.run_sync(conversation.begin, question)
        yield retrieved
        while (piece := await anyio.to_thread.run_sync(next, stream, None)) is not None:
            yield piece
        assert conversation.last is not None
        yield conversation.last
    finally:
        if stream is not None:
            stream.close()
        metrics.generation.observe(time.perf_counter() - started)
        lease.release()


def event_stream(conversation: Conversation, question: str, lease: Lease, metrics: Metrics) -> StreamingResponse:
    """``ask`` and ``caption`` streamed: the concepts retrieved, token events, then the answer with its concepts."""

    async def events() -> AsyncIterator[str]:
        try:
            async for item in pieces(conversation, question, lease, metrics):
                if isinstance(item, list):
                    yield sse("retrieval", {"concepts": [c.to_dict() for c in item]})
                else:
                    yield sse("done", item.to_dict()) if isinstance(item, Answer) else sse("token", {"text": item})
        except RapError as exc:
            yield sse("error", error_body(error_code(exc), exc.message))

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

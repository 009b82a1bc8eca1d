"""What the transformers backends share: decoding settings and streaming generation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rap.generation.base import GenerationOptions


class TransformersOptions(BaseModel):
    """Options every transformers backend takes: where the model runs, and how to decode fast.

    A static KV cache lets the decoding step keep one shape, which is what
    ``torch.compile`` needs to turn it into one fused graph (CUDA graphs with
    ``reduce-overhead``); together they lift small-batch decoding well above
    plain ``generate``. Both are off by default: compiling takes minutes on the
    first request, which a one-off command should not pay.
    """

    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(None, description="torch device, e.g. cuda:1; default cuda when available, else cpu")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights' precision; auto is bfloat16 on cuda, float32 elsewhere"
    )
    static_cache: bool = Field(False, description="decode with a static KV cache (fixed shapes)")
    compile: bool = Field(False, description="torch.compile the model's forward (on CUDA; needs static_cache)")

    def generate_extra(self) -> dict[str, Any]:
        return {"cache_implementation": "static"} if self.static_cache or self.compile else {}

    def prepare(self, model: Any) -> Any:
        """Compile ``model``'s forward when asked and worth it (CUDA), and return the model."""
        import torch

        if self.compile and torch.cuda.is_available():
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
        return model


def generate_kwargs(options: GenerationOptions) -> dict[str, Any]:
    """transformers ``generate`` arguments for rap's options: greedy at temperature 0."""
    kwargs: dict[str, Any] = {"max_new_tokens": options.max_new_tokens}
    if options.temperature > 0:
        # top_k=0 turns off any top-k a model's generation_config sets (Qwen ships top_k=1,
        # which would make sampling greedy without a word).
        kwargs |= {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p, "top_k": 0}
    else:
        kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return kwargs


def stream_generate(model: Any, tokenizer: Any, inputs: dict[str, Any], options: GenerationOptions, **extra: Any) -> Iterator[str]:
    """Run ``model.generate`` in a thread and yield the new text as it is decoded.

    An error inside generation is raised here, in the caller's thread, once the
    text decoded before it has been yielded.
    """
    import torch
    from transformers import TextIteratorStreamer

    if options.seed is not None:
        torch.manual_seed(options.seed)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**inputs, **generate_kwargs(options), **extra, streamer=streamer)
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if failure:
        raise failure[0]

"""What the transformers backends share: decoding settings, streaming generation, chat-template messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rap._imports import require
from rap.errors import ConfigError
from rap.generation.base import GenerationOptions
from rap.generation.prompt import Turn


class TransformersOptions(BaseModel):
    """Options every transformers backend takes: where the model runs, the concept features it keeps, how it decodes.

    A static KV cache gives the decoding step one shape whatever the prompt,
    which is what ``torch.compile`` needs to turn the step into one CUDA graph;
    transformers then compiles the decoding step (not the prefill, whose shape
    changes with every prompt) on first use. The cache is sized once, for
    ``cache_length`` tokens, so that later questions with longer prompts reuse
    the compiled step instead of compiling again. Both are off by default:
    compiling takes a minute on the first request, which a one-off command
    should not pay; a server or an evaluation run should turn them on.
    """

    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(None, description="torch device, e.g. cuda:1; default cuda when available, else cpu")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights' precision; auto is bfloat16 on cuda, float32 elsewhere"
    )
    static_cache: bool = Field(False, description="decode with a static KV cache (fixed shapes)")
    compile: bool = Field(False, description="torch.compile the decoding step (CUDA only); implies static_cache")
    concept_cache_size: int = Field(
        64, ge=0, le=100_000, description="concept images whose vision features stay in device memory "
        "(bfloat16: 5 to 6 MB each for LLaVA-1.5-7B, about 1 MB for Qwen2.5-VL-7B at 144 tokens); 0 turns the cache off"
    )
    cache_length: int = Field(
        4096, ge=64, description="tokens the static cache holds (prompt plus answer); longer prompts grow it"
    )
    quantize: Literal["8bit", "4bit"] | None = Field(
        None, description="load the language and vision weights in 8 or 4 bits with bitsandbytes (CUDA only), as the "
        "official --load-8bit / --load-4bit: about a half or a quarter of the memory of bfloat16, for a large model on a small GPU"
    )

    def torch_dtype(self, device: str) -> Any:
        """The weights' precision: the one chosen, else bfloat16 on CUDA and float32 elsewhere."""
        import torch

        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return torch.bfloat16 if device.startswith("cuda") else torch.float32

    def quantization(self, device: str) -> dict[str, Any]:
        """``from_pretrained`` arguments for the quantization chosen ({} for none), or one line saying why it cannot be.

        Checked before any weights are read, so a refusal costs nothing.
        """
        if self.quantize is None:
            return {}
        import torch

        if not torch.cuda.is_available() or not device.startswith("cuda"):
            where = "this machine has no CUDA device" if not torch.cuda.is_available() else f"the device is {device}"
            raise ConfigError(f"quantize={self.quantize} needs a CUDA device (bitsandbytes) and {where}; drop the quantize option")
        require("bitsandbytes", "quantize")
        from transformers import BitsAndBytesConfig

        if self.quantize == "8bit":
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:  # the official code's 4-bit setting: NF4 with double quantization, computing in the chosen precision
            config = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_compute_dtype=self.torch_dtype(device), bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4"
            )
        return {"quantization_config": config, "device_map": device}

    def generate_extra(self) -> dict[str, Any]:
        """``generate`` arguments for the cache and compilation chosen."""
        if not (self.static_cache or self.compile):
            return {}
        extra: dict[str, Any] = {"cache_implementation": "static", "disable_compile": not self.compile}
        from transformers import GenerationConfig

        if hasattr(GenerationConfig(), "max_cache_len"):  # older transformers size the cache per question
            extra["max_cache_len"] = self.cache_length
        return extra


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


def chat_messages(conversation: Sequence[Turn]) -> list[dict[str, Any]]:
    """The conversation as chat-template messages, images as placeholders in their places."""
    messages: list[dict[str, Any]] = []
    for turn in conversation:
        content = [
            {"type": "text", "text": part} if isinstance(part, str) else {"type": "image"} for part in turn.parts
        ]
        messages.append({"role": "user", "content": content})
        if turn.reply is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.reply}]})
    return messages

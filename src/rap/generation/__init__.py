"""Generation: personalized answers from multimodal LLMs, chosen by name.

Backends: ``llava:<hub name or folder>`` (LLaVA-1.5 family, RAP-LLaVA, via
transformers), ``qwen2-vl:<hub name or folder>`` (Qwen2-VL / Qwen2.5-VL),
``openai:<model>`` (any OpenAI-compatible chat-completions server),
``offline:smollm2`` (SmolLM2-135M-Instruct from PyPI: a weak, text-only fallback).
"""

from __future__ import annotations

from rap.generation.base import GenerationOptions, Generator
from rap.generation.prompt import Part, PromptConcept, Turn, concept_block, user_turn
from rap.registry import Registry

GENERATORS: Registry[Generator] = Registry(
    "generator",
    {
        "llava": "rap.generation.llava",
        "qwen2-vl": "rap.generation.qwen2_vl",
        "openai": "rap.generation.openai_compatible",
        "offline": "rap.generation.offline",
    },
)


def create_generator(spec: str, **options: object) -> Generator:
    """Build the generation backend named by ``spec`` with its own ``options`` (see :data:`GENERATORS`)."""
    return GENERATORS.create(spec, **options)


__all__ = [
    "GENERATORS",
    "GenerationOptions",
    "Generator",
    "Part",
    "PromptConcept",
    "Turn",
    "concept_block",
    "create_generator",
    "user_turn",
]

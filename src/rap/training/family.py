"""What training needs from each model family, taken from the family's own inference backend.

A :class:`Family` loads a checkpoint as its backend does, lays a conversation
out as its backend does, and turns the laid-out text into the model's inputs:
token ids with each image slot widened to the image's visual tokens, and the
pixels (and, for Qwen, patch grids and M-RoPE token types) the model's
``forward`` takes. :class:`~rap.training.encode.ChatEncoder` places the labels
the same way for every family, from these three operations alone.

Families are chosen through :data:`FAMILIES`, the registry mechanism every
other backend uses, by the checkpoint's ``model_type``; a package adds one by
registering its class under the ``model_type`` it trains.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rap._imports import require
from rap.errors import ConfigError
from rap.generation import llava, qwen2_vl
from rap.generation.prompt import Turn
from rap.registry import Registry


class Family(ABC):
    """A loaded checkpoint of one family, in training mode on the CPU."""

    #: the backend that loads the merged checkpoint, as in ``rap ask --backend``
    backend: str
    model: Any
    tokenizer: Any
    image_token_id: int
    #: concepts per sample when the user sets none: what the backend injects by default
    max_concepts: int

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the weights: data-loading workers encode with the processor, never the model.

        Workers started by spawn or forkserver receive the dataset pickled, and
        with it this family; the model would be copied into every one of them.
        """
        state = self.__dict__.copy()
        state.pop("model", None)
        return state

    @abstractmethod
    def render(self, conversation: Sequence[Turn], generation_prompt: bool) -> str:
        """The conversation as the backend's chat template writes it, one image slot per image."""

    @abstractmethod
    def add_special_tokens(self, text: str) -> bool:
        """Whether the tokenizer adds its special tokens to ``text``, as the backend has it do."""

    @abstractmethod
    def inputs(self, text: str, conversation: Sequence[Turn]) -> dict[str, Any]:
        """The model's inputs for ``text`` (no batch dimension on per-token tensors), image slots widened."""

    @abstractmethod
    def save_processor(self, folder: Path) -> None:
        """Write what the backend loads beside the weights: tokenizer, image processor, chat template."""


FAMILIES: Registry[Family] = Registry(
    "training family", dict.fromkeys(("llava", *qwen2_vl.MODEL_TYPES), "rap.training.family")
)
"""Each family is registered under the ``model_type`` of the checkpoints it loads; ``factory(base, dtype=...)``."""


@FAMILIES.register("llava", help="LLaVA-1.5 in the llava-hf layout (RAP-LLaVA and RAP-Phi3-V after rap convert llava)")
class LlavaFamily(Family):
    """LLaVA through its processor, which widens each ``<image>`` and makes ``pixel_values``."""

    backend = "llava"

    def __init__(self, base: str, *, dtype: Any) -> None:
        self.processor, self.model = llava.load(base, "cpu", dtype)
        self.tokenizer = self.processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.processor.image_token)
        self.max_concepts = llava.paper_max_concepts(self.model.config)

    def render(self, conversation: Sequence[Turn], generation_prompt: bool) -> str:
        return llava.render(self.processor, conversation, generation_prompt)

    def add_special_tokens(self, text: str) -> bool:
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))  # as inference: a template may write BOS itself

    def inputs(self, text: str, conversation: Sequence[Turn]) -> dict[str, Any]:
        images = [image.convert("RGB") for turn in conversation for image in turn.images]
        batch = self.processor(
            text=text, images=images or None, return_tensors="pt", add_special_tokens=self.add_special_tokens(text)
        )
        example = {"input_ids": batch["input_ids"][0], "attention_mask": batch["attention_mask"][0]}
        if images:
            example["pixel_values"] = batch["pixel_values"]
        return example

    def save_processor(self, folder: Path) -> None:
        self.processor.save_pretrained(folder)


@FAMILIES.register("qwen2_5_vl", help="Qwen2.5-VL, as the qwen2-vl backend loads it")
@FAMILIES.register("qwen2_vl", help="Qwen2-VL, as the qwen2-vl backend loads it")
class Qwen2VLFamily(Family):
    """Qwen2-VL and Qwen2.5-VL, each image at the budget the backend's default options give it."""

    backend = "qwen2-vl"

    def __init__(self, base: str, *, dtype: Any) -> None:
        checkpoint = qwen2_vl.load(base, dtype)
        self.model, self.tokenizer, self.image_processor = checkpoint.model, checkpoint.tokenizer, checkpoint.image_processor
        self.template = checkpoint.template
        config = self.model.config
        self.image_token_id = int(config.image_token_id)
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.merge = int(config.vision_config.spatial_merge_size)
        defaults = qwen2_vl.Qwen2VLOptions()
        self.max_concepts = defaults.max_concepts
        self.concept_max_pixels = defaults.concept_max_pixels
        self.query_max_pixels = defaults.query_max_pixels or int(self.image_processor.size["longest_edge"])

    def render(self, conversation: Sequence[Turn], generation_prompt: bool) -> str:
        return qwen2_vl.render(self.tokenizer, self.template, conversation, generation_prompt)

    def add_special_tokens(self, text: str) -> bool:
        return False

    def inputs(self, text: str, conversation: Sequence[Turn]) -> dict[str, Any]:
        torch = require("torch", "train")
        images = qwen2_vl.prompt_images(conversation, self.query_max_pixels, self.concept_max_pixels)
        batches = [qwen2_vl.image_inputs(self.image_processor, image) for image in images]
        grids = [batch["image_grid_thw"][0] for batch in batches]
        widened = qwen2_vl.widen(text, self.image_token, grids, self.merge)
        encoded = self.tokenizer(widened, add_special_tokens=False, return_tensors="pt")
        input_ids = encoded["input_ids"][0]
        example = {"input_ids": input_ids, "attention_mask": encoded["attention_mask"][0]}
        if images:
            example["mm_token_type_ids"] = (input_ids == self.image_token_id).int()
            example["pixel_values"] = torch.cat([batch["pixel_values"] for batch in batches])
            example["image_grid_thw"] = torch.stack(grids)
        return example

    def save_processor(self, folder: Path) -> None:
        self.tokenizer.chat_template = self.template  # the backend falls back to the tokenizer's template
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


def load_family(base: str, dtype: Any) -> Family:
    """The checkpoint ``base`` loaded as its backend loads it, the model in training mode."""
    transformers = require("transformers", "train")
    llava.refuse_original_format(base)
    try:
        model_type = transformers.AutoConfig.from_pretrained(base).model_type
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config of {base} ({exc}); give a folder written by save_pretrained or a hub name") from None
    if model_type not in FAMILIES.names():
        raise ConfigError(f"{base} is a {model_type} model; rap train takes {', '.join(FAMILIES.names())}")
    family = FAMILIES.create(f"{model_type}:{base}", dtype=dtype)
    family.model.train()
    return family

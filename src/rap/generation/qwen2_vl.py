"""``qwen2-vl:<hub name or folder>``: Qwen2-VL and Qwen2.5-VL through transformers.

Both families load through the same classes (``AutoModelForImageTextToText``)
and take the same inputs, so one backend serves both. The prompt is the
paper's (:mod:`rap.generation.prompt`) rendered by the checkpoint's own chat
template: one user message per turn whose content lists the turn's images and
text in order, each earlier reply as an assistant message. Roles and special
tokens come from the template alone.

The backend does not build the checkpoint's ``AutoProcessor``: in transformers
5 the Qwen2-VL processor cannot be constructed without torchvision (its video
processor needs it), and rap sends no video. It loads the two halves it needs,
the tokenizer and the image processor, takes the processor's chat template, and
widens each image slot the template writes into one ``<|image_pad|>`` per
visual token itself, as the processor does.

**Avatar resolution.** LLaVA-1.5 sees every image at 336x336, 576 visual
tokens, so each retrieved concept costs as much context as the photo. Qwen
reads images at their own size, one token per 28x28 pixels, which lets a
concept's reference image come in smaller than the query photo:
``concept_max_pixels`` caps the reference images, ``query_max_pixels``
(default: the processor's own budget) the photo. The default concept budget is
336 x 336 pixels, what RAP-LLaVA's CLIP tower sees of each concept: the same
detail at 144 tokens instead of 576. Against a phone photo at Qwen's default
budget (about 1,280 tokens), two concepts then add about a fifth to the prompt,
which is what the 1.2x time-to-first-token target leaves room for. Each image goes through the processor with
its own budget, so its token count follows it. Smaller avatars mean a faster
first token and room for more concepts and longer chats; the cost is detail
that telling two similar things apart (two grey mugs) may need. The photo keeps
the processor's budget because the answer is read off it. How recognition
accuracy moves between 64 and 576 tokens per concept has not been measured,
since no Qwen weights can be downloaded where rap is built; sweep
``concept_max_pixels`` on RAP's evaluation set once they are at hand.

**Vision-feature cache.** A concept's reference image is the same from one
question to the next, so what the vision tower makes of it is kept (see
:mod:`rap.generation.vision_cache`) together with its patch grid, keyed by
:attr:`Turn.image_keys <rap.generation.prompt.Turn.image_keys>`; the query
photo is encoded afresh. The features go to ``generate`` as
``mm_encoder_outputs`` beside ``image_grid_thw``. Reuse changes nothing:
Qwen's vision tower attends within each image only (``cu_seqlens``, and
Qwen2.5-VL's windows lie inside an image), so an image's features do not
depend on the others encoded with it, and M-RoPE positions come from the token
ids and grids, never from the features. The tests find cached and uncached
logits equal on the CPU and the greedy tokens the same; on a GPU a different
batch may round the last bits differently, as any change of batch does.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import ConfigDict, Field

from rap._imports import loading_checkpoint, require
from rap.errors import ConfigError, InvalidInput
from rap.generation import GENERATORS
from rap.generation.base import GenerationOptions, Generator, validated_options
from rap.generation.hf import TransformersOptions, chat_messages, stream_generate
from rap.generation.prompt import Turn
from rap.generation.vision_cache import FeatureCache

MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
PIXELS_PER_TOKEN = 28 * 28
"""One visual token: a 2x2 merge of 14-pixel patches, in both families."""


class Qwen2VLOptions(TransformersOptions):
    """Settings of the ``qwen2-vl`` backend."""

    model_config = ConfigDict(extra="forbid")

    max_concepts: int = Field(3, ge=0, le=16, description="retrieved concepts put in the prompt")
    concept_max_pixels: int = Field(
        336 * 336,
        ge=4 * PIXELS_PER_TOKEN,
        description="pixel budget of each concept's reference image, 28x28 per visual token "
        "(the default, LLaVA-1.5's 336x336, caps it at 144 tokens)",
    )
    query_max_pixels: int | None = Field(
        None, ge=4 * PIXELS_PER_TOKEN, description="pixel budget of the query photo; None: the processor's own"
    )


@GENERATORS.register(
    "qwen2-vl",
    help="Qwen2-VL and Qwen2.5-VL via transformers, concept images at a smaller resolution than "
    "the photo; a hub name or local folder",
    default_argument="Qwen/Qwen2.5-VL-7B-Instruct",
)
def create(argument: str, **options: object) -> Qwen2VL:
    settings = validated_options(Qwen2VLOptions, options, "qwen2-vl")
    return Qwen2VL(argument, settings)


@dataclass(frozen=True)
class PromptImage:
    """An image of the conversation as the vision tower will take it."""

    image: Image.Image
    max_pixels: int
    key: str | None
    """Cache key: a concept image's SHA-256; None for the photo, which is never cached."""


@dataclass(frozen=True)
class Checkpoint:
    """What a Qwen2-VL checkpoint is made of, as the backend (and ``rap train``) uses it."""

    tokenizer: Any
    image_processor: Any
    template: str
    """The processor's chat template (the tokenizer's when the processor has none)."""
    model: Any


def load(name_or_path: str, dtype: Any, **extra: Any) -> Checkpoint:
    """The checkpoint (on the CPU unless ``extra``, the other ``from_pretrained`` arguments, places it),
    or a ConfigError that says what is wrong with the folder or name."""
    transformers = require("transformers", "paper")
    with loading_checkpoint("Qwen2-VL model", name_or_path):
        config = transformers.AutoConfig.from_pretrained(name_or_path)
        if config.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"{name_or_path!r} is a {config.model_type} model, not Qwen2-VL or Qwen2.5-VL; "
                "use the backend made for it (e.g. llava:...)"
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
        image_processor = transformers.AutoImageProcessor.from_pretrained(name_or_path)
        processor_dict, _ = transformers.ProcessorMixin.get_processor_dict(name_or_path)
        model = transformers.AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype, **extra)
    template = processor_dict.get("chat_template") or tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise ConfigError(f"{name_or_path!r} has no chat template (chat_template.jinja or chat_template.json)")
    return Checkpoint(tokenizer, image_processor, template, model)


def render(tokenizer: Any, template: str, conversation: Sequence[Turn], generation_prompt: bool = True) -> str:
    """The conversation laid out by the chat template, one image slot per image.

    With ``generation_prompt`` it ends ready for the reply, as inference sends
    it; without, it ends after the last turn's reply, as training reads it.
    """
    return tokenizer.apply_chat_template(
        chat_messages(conversation), chat_template=template, tokenize=False,
        add_generation_prompt=generation_prompt,
    )  # fmt: skip


def prompt_images(conversation: Sequence[Turn], query_max_pixels: int, concept_max_pixels: int) -> list[PromptImage]:
    """Every image in prompt order, each with its budget; a turn's leading image is its photo."""
    images = []
    for turn in conversation:
        keys = turn.image_keys if len(turn.image_keys) == len(turn.images) else [None] * len(turn.images)
        has_photo = bool(turn.parts) and isinstance(turn.parts[0], Image.Image)
        for n, (image, key) in enumerate(zip(turn.images, keys)):
            if n == 0 and has_photo:
                images.append(PromptImage(image, query_max_pixels, None))
            else:
                images.append(PromptImage(image, concept_max_pixels, key))
    return images


def image_inputs(image_processor: Any, image: PromptImage) -> Any:
    """The image's ``pixel_values`` and ``image_grid_thw`` at its own pixel budget.

    Raises ValueError for an image the processor cannot take (e.g. a side more
    than 200 times the other).
    """
    size = {"shortest_edge": image_processor.size["shortest_edge"], "longest_edge": image.max_pixels}
    return image_processor(images=[image.image], size=size, return_tensors="pt")


def widen(text: str, image_token: str, grids: Sequence[Any], merge: int) -> str:
    """``text`` with its n-th image slot repeated once per visual token of the n-th image (patch grid ``grids[n]``)."""
    pieces = text.split(image_token)
    if len(pieces) != len(grids) + 1:
        raise ConfigError(f"the chat template wrote {len(pieces) - 1} image slots for {len(grids)} images")
    widened = [pieces[0]]
    for grid, piece in zip(grids, pieces[1:]):
        widened += [image_token * (int(grid.prod()) // merge**2), piece]
    return "".join(widened)


class Qwen2VL(Generator):
    """A Qwen2-VL or Qwen2.5-VL checkpoint, with a memory of its concept images' features."""

    def __init__(self, name_or_path: str, options: Qwen2VLOptions | None = None) -> None:
        self.options = options or Qwen2VLOptions()
        self.id = f"qwen2-vl:{name_or_path}"
        self.max_concepts = self.options.max_concepts
        self._torch = require("torch", "paper")
        transformers = require("transformers", "paper")
        self.device = self.options.device or ("cuda" if self._torch.cuda.is_available() else "cpu")
        quantization = self.options.quantization(self.device)  # a quantized model is loaded onto its device
        checkpoint = load(name_or_path, self.options.torch_dtype(self.device), **quantization)
        self._tokenizer, self._image_processor, self._template = (
            checkpoint.tokenizer, checkpoint.image_processor, checkpoint.template
        )
        model, config = checkpoint.model, checkpoint.model.config
        if "mm_encoder_outputs" not in inspect.signature(model.forward).parameters:
            raise ConfigError(
                f"transformers {transformers.__version__} cannot take cached vision features; "
                "run: pip install -U transformers"
            )
        self._model = (model if quantization else model.to(self.device)).eval()
        self._image_token_id = int(config.image_token_id)
        self._image_token: str = self._tokenizer.convert_ids_to_tokens(self._image_token_id)
        self._merge = int(config.vision_config.spatial_merge_size)
        self._query_max_pixels = self.options.query_max_pixels or int(self._image_processor.size["longest_edge"])
        self._features: FeatureCache[tuple[Any, Any]] = FeatureCache(self.options.concept_cache_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, device={self.device!r})"

    def render(self, conversation: Sequence[Turn]) -> str:
        """The prompt text the model reads, one image slot per image, ready for the reply."""
        return render(self._tokenizer, self._template, conversation)

    def _vision(self, images: Sequence[PromptImage]) -> tuple[list[Any], list[Any]]:
        """Each image's patch grid and features: concept images from the cache where kept, the rest encoded now."""
        torch = self._torch
        grids: list[Any] = [None] * len(images)
        features: list[Any] = [None] * len(images)
        missing = []
        for n, image in enumerate(images):
            kept = self._features.get(image.key) if image.key is not None else None
            if kept is None:
                missing.append(n)
            else:
                grids[n], features[n] = kept
        if not missing:
            return grids, features
        pixels = []
        for n in missing:
            try:
                batch = image_inputs(self._image_processor, images[n])
            except ValueError as exc:  # e.g. a side more than 200 times the other
                raise InvalidInput(f"{self.id} cannot take this image: {exc}") from None
            pixels.append(batch["pixel_values"])
            grids[n] = batch["image_grid_thw"][0]
        device = self._model.device
        with torch.inference_mode():
            encoded = self._model.get_image_features(
                torch.cat(pixels).to(device, self._model.dtype),
                torch.stack([grids[n] for n in missing]).to(device),
            ).pooler_output
        for n, feature in zip(missing, encoded):
            features[n] = feature
            if images[n].key is not None:
                self._features.put(images[n].key, (grids[n], feature))
        return grids, features

    def _inputs(self, conversation: Sequence[Turn]) -> dict[str, Any]:
        """``generate``'s arguments: token ids with each image slot widened to its visual tokens, and the features."""
        torch = self._torch
        for turn in conversation:
            if any(isinstance(part, str) and self._image_token in part for part in turn.parts):
                raise InvalidInput(f"the message contains {self._image_token}, which the model reserves for images")
        text = self.render(conversation)
        images = prompt_images(conversation, self._query_max_pixels, self.options.concept_max_pixels)
        grids, features = self._vision(images)
        encoded = self._tokenizer(
            widen(text, self._image_token, grids, self._merge), add_special_tokens=False, return_tensors="pt"
        )
        device = self._model.device
        inputs: dict[str, Any] = {
            "input_ids": encoded["input_ids"].to(device),
            "attention_mask": encoded["attention_mask"].to(device),
        }
        if images:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            inputs["mm_token_type_ids"] = (inputs["input_ids"] == self._image_token_id).int()
            inputs["image_grid_thw"] = torch.stack(grids).to(device)
            inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=tuple(features))}
        return inputs

    def _stream(self, conversation: Sequence[Turn], options: GenerationOptions) -> Iterator[str]:
        yield from stream_generate(self._model, self._tokenizer, self._inputs(conversation), options, **self.options.generate_extra())

"""``llava:<hub name or folder>``: LLaVA-1.5 and RAP-LLaVA through transformers.

Any folder in the transformers (llava-hf) format loads: ``llava-hf/llava-1.5-7b-hf``
from the hub cache, or the official RAP-LLaVA weights once converted from the
original LLaVA format with :func:`~rap.generation.llava_convert.convert_llava_checkpoint`.

The prompt is the paper's (:mod:`rap.generation.prompt`): each user turn becomes
one message whose content lists ``{"type": "image"}`` and ``{"type": "text"}``
items in the order of its parts, earlier replies become assistant messages, and
the model's own chat template lays them out, so rap never writes a role name.
The images of all turns go to the processor in that same order.

Concept images recur from question to question, so their vision features
(CLIP tower + projector, what ``get_image_features`` returns) are kept in a
:class:`~rap.generation.vision_cache.FeatureCache` keyed by
:attr:`Turn.image_keys <rap.generation.prompt.Turn.image_keys>`. Every question
is therefore answered from ``inputs_embeds`` built here: the token embeddings
with the image positions filled by the query image's features, computed now,
and the concept images' features, cached or computed now and kept. This is what
``LlavaForConditionalGeneration`` does inside ``forward`` when given
``pixel_values``; the tests check that both give the same logits and tokens.

To have a concept's features ready before it is first asked about, call
:meth:`LlavaGenerator.prepare_concepts` when it is remembered or its image is
edited, with its image's key (the SHA-256 that
:attr:`PromptConcept.image_key <rap.generation.prompt.PromptConcept.image_key>`
carries) and the image; an edited image has a new key, so stale features are
never used and simply age out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ConfigDict, Field

from rap._imports import loading_checkpoint, require
from rap.errors import ConfigError, InvalidInput, shell_word
from rap.generation import GENERATORS
from rap.generation.base import GenerationOptions, Generator, validated_options
from rap.generation.hf import TransformersOptions, chat_messages, stream_generate
from rap.generation.prompt import Turn
from rap.generation.vision_cache import FeatureCache

DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"
_ENCODE_BATCH = 8  # images per vision-tower pass when warming the cache
# what image processors raise for images they cannot take (an empty image divides by zero)
_IMAGE_ERRORS = (ValueError, TypeError, OSError, ArithmeticError)


class LlavaOptions(TransformersOptions):
    """Settings of the ``llava`` backend."""

    model_config = ConfigDict(extra="forbid")

    max_concepts: int | None = Field(
        None, ge=0, le=16,
        description="retrieved concepts put in the prompt; default the paper's: 3 for Phi-3 models, else 2",
    )


@GENERATORS.register(
    "llava",
    help="LLaVA-1.5 family via transformers (llava-hf format), e.g. RAP-LLaVA converted with "
    "'rap convert llava'; a hub name or local folder",
    default_argument=DEFAULT_MODEL,
)
def create(argument: str, **options: object) -> LlavaGenerator:
    settings = validated_options(LlavaOptions, options, "llava")
    return LlavaGenerator(argument, settings)


def paper_max_concepts(config: Any) -> int:
    """Concepts per prompt as the paper injects them: 3 for RAP-Phi3-V (Phi-3), 2 for RAP-LLaVA.

    Both were chosen to fit the language model's context with one 576-token
    image per concept.
    """
    return 3 if config.text_config.model_type == "phi3" else 2


def render(processor: Any, conversation: Sequence[Turn], generation_prompt: bool = True) -> str:
    """The conversation laid out by the checkpoint's chat template, one image token per image.

    With ``generation_prompt`` it ends ready for the reply, as inference sends
    it; without, it ends after the last turn's reply, as training reads it.
    """
    return processor.apply_chat_template(
        chat_messages(conversation), add_generation_prompt=generation_prompt, tokenize=False
    )


class LlavaGenerator(Generator):
    """A LLaVA model answering from embeddings in which concept images' features are reused."""

    def __init__(self, name_or_path: str, options: LlavaOptions | None = None) -> None:
        self._torch = require("torch", "paper")
        self.options = options or LlavaOptions()
        self.id = f"llava:{name_or_path}"
        cuda = self._torch.cuda.is_available()
        self.device = self.options.device or ("cuda" if cuda else "cpu")
        quantization = self.options.quantization(self.device)
        self._processor, self._model = load(name_or_path, self.device, self.options.torch_dtype(self.device), **quantization)
        chosen = self.options.max_concepts
        self.max_concepts = chosen if chosen is not None else paper_max_concepts(self._model.config)
        self._cache: FeatureCache[Any] = FeatureCache(self.options.concept_cache_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, device={self.device!r})"

    def render(self, conversation: Sequence[Turn]) -> str:
        """The prompt text the model reads, one image token per image, ready for the reply."""
        return render(self._processor, conversation)

    def prepare_concepts(self, images: Mapping[str, Image.Image]) -> int:
        """Compute and keep the vision features of concept images (image key -> image) not yet kept.

        Returns how many were computed. Beyond the cache's capacity only the
        last ones stay, so warm the concepts most likely to be asked about.
        """
        if self._cache.capacity == 0:
            return 0
        missing = {key: image for key, image in images.items() if key not in self._cache}
        keys = list(missing)
        for start in range(0, len(keys), _ENCODE_BATCH):
            chunk = keys[start : start + _ENCODE_BATCH]
            features = self._encode(self._pixel_values([missing[key] for key in chunk]))
            for key, feature in zip(chunk, features):
                self._cache.put(key, feature)
        return len(missing)

    def _stream(self, conversation: Sequence[Turn], options: GenerationOptions) -> Iterator[str]:
        batch, keys = self._inputs(conversation)
        room = self._model.config.text_config.max_position_embeddings - batch["input_ids"].shape[1]
        if room < 1:
            raise InvalidInput(
                f"the prompt is {batch['input_ids'].shape[1]} tokens, as long as {self.id} reads; "
                "ask with fewer concepts or start a new conversation"
            )
        inputs = {
            "inputs_embeds": self._embeddings(batch, keys),
            "attention_mask": batch["attention_mask"].to(self.device),
        }
        tokenizer = self._processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        capped = options.model_copy(update={"max_new_tokens": min(options.max_new_tokens, room)})
        yield from stream_generate(self._model, tokenizer, inputs, capped, pad_token_id=pad, **self.options.generate_extra())

    def _inputs(self, conversation: Sequence[Turn]) -> tuple[Any, list[str | None]]:
        """Token ids (image tokens expanded), attention mask and pixel values, with each image's cache key."""
        image_token = self._processor.image_token
        written = [part for turn in conversation for part in turn.parts if isinstance(part, str)]
        written += [turn.reply for turn in conversation if turn.reply is not None]
        if any(image_token in text for text in written):
            raise InvalidInput(f"{image_token} stands for an image in {self.id}'s prompts; write it otherwise")
        text = self.render(conversation)
        images = [image for turn in conversation for image in turn.images]
        keys = [key for turn in conversation for key in _image_keys(turn)]
        if text.count(image_token) != len(images):
            raise ConfigError(f"the chat template of {self.id} does not place one image token per image")
        bos = self._processor.tokenizer.bos_token
        try:
            batch = self._processor(
                text=text,
                images=[image.convert("RGB") for image in images] or None,
                return_tensors="pt",
                add_special_tokens=not (bos and text.startswith(bos)),  # a template may write BOS itself
            )
        except _IMAGE_ERRORS as exc:
            raise InvalidInput(f"{self.id} cannot take these images ({exc})") from None
        return batch, keys

    def _embeddings(self, batch: Any, keys: list[str | None]) -> Any:
        """Token embeddings with every image's features in its image-token positions."""
        input_ids = batch["input_ids"].to(self.device)
        with self._torch.inference_mode():
            embeds = self._model.get_input_embeddings()(input_ids)
            if not keys:
                return embeds
            features = self._image_features(batch["pixel_values"], keys)
            positions = (input_ids == self._model.config.image_token_id).unsqueeze(-1)
            return embeds.masked_scatter(positions, self._torch.cat(features).to(embeds.dtype))

    def _image_features(self, pixel_values: Any, keys: list[str | None]) -> list[Any]:
        """Each image's features: concept images' from the cache where kept, the rest computed now."""
        features = [self._cache.get(key) if key is not None else None for key in keys]
        todo = [n for n, feature in enumerate(features) if feature is None]
        if todo:
            for n, feature in zip(todo, self._encode(pixel_values[todo])):
                features[n] = feature
                if keys[n] is not None:
                    self._cache.put(keys[n], feature)
        return features

    def _pixel_values(self, images: Sequence[Image.Image]) -> Any:
        try:
            batch = self._processor.image_processor([image.convert("RGB") for image in images], return_tensors="pt")
        except _IMAGE_ERRORS as exc:
            raise InvalidInput(f"{self.id} cannot take this image ({exc})") from None
        return batch["pixel_values"]

    def _encode(self, pixel_values: Any) -> list[Any]:
        """Vision tower + projector: one (tokens, hidden) tensor per image."""
        with self._torch.inference_mode():
            output = self._model.get_image_features(pixel_values=pixel_values.to(self.device, self._model.dtype))
        # copies, so that a kept entry does not hold on to the whole batch's features
        return [feature.clone() for feature in output.pooler_output]


def _image_keys(turn: Turn) -> list[str | None]:
    """The turn's image keys, one per image; a turn built without keys caches nothing."""
    return list(turn.image_keys) if len(turn.image_keys) == len(turn.images) else [None] * len(turn.images)


def load(name_or_path: str, device: str, dtype: Any, **extra: Any) -> tuple[Any, Any]:
    """Processor and model (in eval mode), or a ConfigError that says what is wrong with the folder or name.

    ``extra`` goes to ``from_pretrained`` (a quantization config, say).
    """
    transformers = require("transformers", "paper")
    refuse_original_format(name_or_path)
    with loading_checkpoint("LLaVA model", name_or_path):
        config = transformers.AutoConfig.from_pretrained(name_or_path)
        if config.model_type != "llava":
            raise ConfigError(f"{name_or_path} is a {config.model_type} model, not LLaVA; choose another backend")
        processor = transformers.AutoProcessor.from_pretrained(name_or_path)
        # straight onto the device: a 13B model need not pass through host memory first
        model = transformers.LlavaForConditionalGeneration.from_pretrained(name_or_path, **({"dtype": dtype, "device_map": device} | extra))
    if not getattr(processor, "chat_template", None):
        raise ConfigError(
            f"{name_or_path} has no chat template; add the one it was trained with as chat_template.jinja "
            "(LLaVA-1.5: rap.generation.llava_convert.LLAVA_V1_CHAT_TEMPLATE)"
        )
    return processor, model.eval()


def refuse_original_format(name_or_path: str) -> None:
    """Say how to fix a folder transformers cannot load: no config, or an original-LLaVA checkpoint."""
    folder = Path(name_or_path)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ConfigError(f"{name_or_path} has no config.json; give a folder written by save_pretrained")
    try:
        original = "mm_vision_tower" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        original = False
    if original:
        converted = shell_word(str(folder.resolve()) + "-hf")
        raise ConfigError(
            f"{name_or_path} is in the original LLaVA format; convert it first with "
            f"'rap convert llava {shell_word(str(folder))} {converted}', then use --model {converted}"
        )

"""A conversation as training tensors: the inference prompt, with the loss on the replies only.

The text is laid out by :func:`rap.generation.llava.chat_messages` and the
checkpoint's own chat template, the two things
:meth:`LlavaGenerator.render <rap.generation.llava.LlavaGenerator.render>`
uses, so the model is trained on the prompt it is later asked with.

Which tokens are the answer is found without knowing the template: for each
reply, the conversation up to its question is rendered with the generation
prompt (exactly what inference would send), and up to the reply with the reply.
The reply's characters are what the second adds to the first; the full text
must begin with both, or the template is not one rap can train with. Tokens
whose characters fall in a reply, its end-of-turn marker included (``</s>``
in LLaVA's v1 template), keep their labels; everything else, system prompt,
roles, questions, image tokens, is -100.

Character spans become token spans through the tokenizer's offsets on the
unexpanded text. The processor then widens each image token into one per
visual feature; every other token is the same, so the labels follow the
non-image tokens in order, and the widened image tokens are -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rap.errors import ConfigError, InvalidInput
from rap.generation.llava import chat_messages
from rap.generation.prompt import Turn

IGNORE = -100
"""The label that PyTorch's cross-entropy skips."""


class ChatEncoder:
    """Turns conversations into ``input_ids``, ``attention_mask``, ``labels`` and ``pixel_values``."""

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)

    def prompt(self, conversation: Sequence[Turn]) -> str:
        """What inference sends for the last turn's question (its reply ignored)."""
        *earlier, last = conversation
        return self._template([*earlier, Turn(last.parts)], generation_prompt=True)

    def answer_spans(self, conversation: Sequence[Turn]) -> tuple[str, list[tuple[int, int]]]:
        """The full text and the character span of each reply (with its end-of-turn marker)."""
        text = self._template(conversation, generation_prompt=False)
        spans = []
        for n in range(len(conversation)):
            before = self.prompt(conversation[: n + 1])
            upto = self._template(conversation[: n + 1], generation_prompt=False)
            if not (upto.startswith(before) and text.startswith(upto)):
                raise ConfigError("the chat template does not render a conversation as its prompts followed by replies")
            spans.append((len(before), len(upto)))
        return text, spans

    def encode(self, conversation: Sequence[Turn]) -> dict[str, Any]:
        """One example's tensors (no batch dimension), every turn answered."""
        text, spans = self.answer_spans(conversation)
        bos = self.tokenizer.bos_token
        special = not (bos and text.startswith(bos))  # as inference: a template may write BOS itself
        plain = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        plain_labels = [
            token if any(start < reply_end and reply_start < end for reply_start, reply_end in spans) else IGNORE
            for token, (start, end) in zip(plain["input_ids"], plain["offset_mapping"])
        ]
        images = [image.convert("RGB") for turn in conversation for image in turn.images]
        batch = self.processor(text=text, images=images or None, return_tensors="pt", add_special_tokens=special)
        input_ids = batch["input_ids"][0]
        labels = _widen(plain["input_ids"], plain_labels, input_ids.tolist(), self.image_token_id)
        if len(labels) > self.max_length:
            raise InvalidInput(
                f"a conversation is {len(labels)} tokens, over max_length {self.max_length}; "
                "raise max_length or train with fewer concepts"
            )
        example = {
            "input_ids": input_ids,
            "attention_mask": batch["attention_mask"][0],
            "labels": input_ids.new_tensor(labels),
        }
        if images:
            example["pixel_values"] = batch["pixel_values"]
        return example

    def _template(self, conversation: Sequence[Turn], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(
            chat_messages(conversation), add_generation_prompt=generation_prompt, tokenize=False
        )


def _widen(plain: list[int], plain_labels: list[int], widened: list[int], image_token: int) -> list[int]:
    """Labels for the processor's ids, whose image tokens were widened; the rest must match ``plain``."""
    kept = iter([(token, label) for token, label in zip(plain, plain_labels) if token != image_token])
    labels = []
    for token in widened:
        if token == image_token:
            labels.append(IGNORE)
            continue
        expected, label = next(kept, (None, IGNORE))
        if expected != token:
            raise ConfigError("the processor tokenizes the text unlike its tokenizer; cannot place the labels")
        labels.append(label)
    if next(kept, None) is not None:
        raise ConfigError("the processor dropped text tokens; cannot place the labels")
    return labels


def collate(examples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """A right-padded batch; the images of all examples in order, as the model consumes them."""
    import torch

    width = max(len(example["input_ids"]) for example in examples)

    def padded(key: str, value: int) -> Any:
        rows = [torch.nn.functional.pad(e[key], (0, width - len(e[key])), value=value) for e in examples]
        return torch.stack(rows)

    batch = {
        "input_ids": padded("input_ids", pad_token_id),
        "attention_mask": padded("attention_mask", 0),
        "labels": padded("labels", IGNORE),
    }
    pixels = [example["pixel_values"] for example in examples if "pixel_values" in example]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
    return batch

"""A conversation as training tensors: the inference prompt, with the loss on the replies only.

The text is laid out by the family's inference backend (its ``render``: the
checkpoint's own chat template over :func:`rap.generation.hf.chat_messages`),
through :class:`~rap.training.family.Family`, so the model is trained on the
prompt it is later asked with.

Which tokens are the answer is found without knowing the template: for each
reply, the conversation up to its question is rendered with the generation
prompt (exactly what inference would send), and up to the reply with the reply.
The reply's characters are what the second adds to the first; the full text
must begin with both, or the template is not one rap can train with. Tokens
whose characters fall in a reply, its end-of-turn marker included (``</s>``
in LLaVA's v1 template), keep their labels; everything else, system prompt,
roles, questions, image tokens, is -100.

Character spans become token spans through the tokenizer's offsets on the
unexpanded text. The family then widens each image token into one per
visual feature, as its backend does; every other token is the same, so the
labels follow the non-image tokens in order, and the widened image tokens are
-100. Nothing here depends on the family beyond those calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rap.errors import ConfigError, InvalidInput
from rap.generation.prompt import Turn
from rap.training.family import Family

IGNORE = -100
"""The label that PyTorch's cross-entropy skips."""


class ChatEncoder:
    """Turns conversations into ``labels`` beside the family's model inputs (``input_ids``, pixels...)."""

    def __init__(self, family: Family, max_length: int) -> None:
        self.family = family
        self.tokenizer = family.tokenizer
        self.max_length = max_length
        self.image_token_id = family.image_token_id

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
        plain = self.tokenizer(text, add_special_tokens=self.family.add_special_tokens(text), return_offsets_mapping=True)
        plain_labels = [
            token if any(start < reply_end and reply_start < end for reply_start, reply_end in spans) else IGNORE
            for token, (start, end) in zip(plain["input_ids"], plain["offset_mapping"])
        ]
        example = self.family.inputs(text, conversation)
        input_ids = example["input_ids"]
        labels = _widen(plain["input_ids"], plain_labels, input_ids.tolist(), self.image_token_id)
        if len(labels) > self.max_length:
            raise InvalidInput(
                f"a conversation is {len(labels)} tokens, over max_length {self.max_length}; "
                "raise max_length or train with fewer concepts"
            )
        return {**example, "labels": input_ids.new_tensor(labels)}

    def _template(self, conversation: Sequence[Turn], generation_prompt: bool) -> str:
        return self.family.render(conversation, generation_prompt)


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
    """A right-padded batch; the images of all examples (pixels, grids) concatenated in order, as the model takes them.

    Per-token tensors are padded with the value that makes the padding inert;
    one an example lacks (Qwen's ``mm_token_type_ids`` in a text-only example)
    is that value throughout, the example having no image tokens.
    """
    import torch

    padding = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE, "mm_token_type_ids": 0}
    width = max(len(example["input_ids"]) for example in examples)

    def row(example: dict[str, Any], key: str) -> Any:
        ids = example["input_ids"]
        tensor = example.get(key, ids.new_full(ids.shape, padding[key]))
        return torch.nn.functional.pad(tensor, (0, width - len(tensor)), value=padding[key])

    keys = list(dict.fromkeys(key for example in examples for key in example))
    return {
        key: torch.stack([row(e, key) for e in examples])
        if key in padding
        else torch.cat([e[key] for e in examples if key in e])
        for key in keys
    }

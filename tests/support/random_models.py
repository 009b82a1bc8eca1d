"""Random-weight checkpoints for tests and benchmarks, saved as real ones are.

Model hubs are out of reach where rap is built and tested, so tests build tiny
models from configs, and benchmarks build real-size ones (random weights give
honest timings). Both are saved with ``save_pretrained`` and loaded back through
the same code path users take. Needs the ``paper`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

BYTE_VOCAB = 259
"""``<unk> <s> </s>`` and the 256 bytes: every text encodes, one token per byte."""


def byte_tokenizer(image_token: bool):
    """A byte-level tokenizer that adds ``<s>`` as Llama's does, optionally with ``<image>``."""
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: n for n, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.add_special_tokens(specials)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if image_token:
        tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    return tokenizer


def save_random_clip(folder: Path, size: Literal["tiny", "vit-l-14-336"] = "tiny", device: str = "cpu") -> Path:
    """A random CLIP vision tower with projection and its image processor, as the ``clip:`` encoder loads it.

    ``vit-l-14-336`` is the paper's encoder's architecture (24 layers, 1024
    wide, 336 px, 768-d embeddings): for timing the encoder on real photos.
    """
    import torch
    import transformers

    if size == "tiny":
        shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                     patch_size=8, projection_dim=16)  # fmt: skip
    else:
        shape = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
                     patch_size=14, projection_dim=768)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**shape)).save_pretrained(folder)
    side = shape["image_size"]
    transformers.CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def save_random_llava(
    folder: Path, size: Literal["tiny", "7b"] = "tiny", dtype: str = "float32", device: str = "cpu"
) -> Path:
    """A random LLaVA-1.5 in the llava-hf layout with processor and v1 chat template.

    ``7b`` is LLaVA-1.5-7B's architecture: Vicuna-7B (32 layers, 4096 wide,
    its 32,064-token embedding and head) behind a CLIP ViT-L/14 at 336 px (576
    patches per image). ``device`` is where the weights are drawn: ``cuda``
    builds a 7B model in seconds where the CPU takes minutes.
    """
    import torch
    import transformers

    from rap.generation.llava_convert import LLAVA_V1_CHAT_TEMPLATE

    if size == "tiny":
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=30, patch_size=6)
    else:
        text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14)
    side, patch = vision["image_size"], vision["patch_size"]
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**vision),
        text_config=transformers.LlamaConfig(
            vocab_size=BYTE_VOCAB + 1 if size == "tiny" else 32064, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0, **text
        ),
        image_token_index=BYTE_VOCAB,
        image_seq_length=(side // patch) ** 2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlavaForConditionalGeneration(config).to(getattr(torch, dtype))
    # No end-of-sequence: a random model then always decodes the number of tokens asked for.
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    image_processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=byte_tokenizer(image_token=True),
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_V1_CHAT_TEMPLATE,
    ).save_pretrained(folder)
    return folder


QWEN_SPECIAL = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
)  # fmt: skip
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's ChatML layout of images and text, without the system prompt the published templates add."""


def save_random_qwen2_vl(
    folder: Path,
    family: Literal["qwen2_vl", "qwen2_5_vl"] = "qwen2_vl",
    max_pixels: int = 16 * 28 * 28,
    size: Literal["tiny", "7b"] = "tiny",
    dtype: str = "float32",
    device: str = "cpu",
) -> Path:
    """A random Qwen2-VL or Qwen2.5-VL laid out as the hub checkpoints are; tiny, or
    ``7b``: Qwen2.5-VL-7B's architecture with its 152,064-token embedding and head
    (for benchmarks; ``family`` must be qwen2_5_vl). ``device`` is where the
    weights are drawn.

    A byte-level tokenizer holding Qwen's special tokens, Qwen's image
    processor with ``max_pixels`` as its budget (the default: 16 visual
    tokens), and a ChatML template saved as the processor's
    ``chat_template.json``, as the published checkpoints ship it.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(QWEN_SPECIAL))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL}
    if size == "7b":
        shape = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6})
    else:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0})
    text = dict(
        vocab_size=300 if size == "tiny" else 152064, max_position_embeddings=32768 if size == "7b" else 4096,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], **shape,
    )  # fmt: skip
    tokens = dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    if family == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2)
        config = transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)
    elif size == "7b":
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, out_hidden_size=3584, num_heads=16,
                      window_size=112, fullatt_block_indexes=[7, 15, 23, 31])  # fmt: skip
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    else:
        # windows of 2x2 merged patches, then one block of full attention: both of Qwen2.5-VL's kinds
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=64, num_heads=2, window_size=56,
                      fullatt_block_indexes=[1])  # fmt: skip
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    # decoding as Qwen ships it, which rap's options must override: greedy, or sampling without top_k=1
    model.generation_config.update(do_sample=True, top_k=1, top_p=0.001, temperature=0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=max_pixels).save_pretrained(folder)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHATML}))
    return folder

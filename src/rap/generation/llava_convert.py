"""Convert a checkpoint in the original LLaVA repository's format to the transformers (llava-hf) format.

The official RAP-LLaVA weights (``Hoar012/RAP-LLaVA-13b``) were trained and
saved with the LLaVA code base: one ``LlavaLlamaForCausalLM`` checkpoint whose
keys are a Llama model's (``model.embed_tokens``, ``model.layers.*``,
``lm_head``) plus ``model.mm_projector.{0,2}.*`` (a two-layer GELU MLP) and,
sometimes, ``model.vision_tower.vision_tower.vision_model.*``; the config names
the CLIP tower (``mm_vision_tower``) whose weights are otherwise loaded from
the hub. transformers cannot load that folder, so :func:`convert_llava_checkpoint`
writes one that ``llava:<folder>`` (and any llava-hf user) can:

* a :class:`~transformers.LlavaConfig`: the Llama settings of the source, the
  tower's vision settings, ``vision_feature_layer`` from ``mm_vision_select_layer``
  and the feature strategy from ``mm_vision_select_feature``;
* the same tensors under transformers' names, placed module by module (so the
  names are whatever the installed transformers writes);
* the tokenizer with an ``<image>`` token added (LLaVA splices images in by a
  negative id instead), the embedding and output rows for it set to the mean of
  the others so that it is never the likeliest next token;
* the tower's image processor, padding to a square with the mean colour first
  when the model was trained with ``image_aspect_ratio: pad`` (LLaVA's
  ``expand2square``), which transformers' LLaVA image processor does with ``do_pad``;
* the chat template the model was trained with: :data:`LLAVA_V1_CHAT_TEMPLATE`
  for Llama (Vicuna) checkpoints, :data:`PHI3_CHAT_TEMPLATE` for Phi-3 ones.

Two language models are known, told apart by the config's ``model_type``:
Llama (``llava_llama``: LLaVA-1.5, RAP-LLaVA) and Phi-3 (``llava_phi``, which
LLaVA++'s LLaVA-Phi-3-mini and RAP-Phi3-V are built on). Phi-3's tensors
already carry transformers' names (fused ``qkv_proj`` and ``gate_up_proj``);
its replies end with ``<|end|>``, which the converted generation config adds
to the end-of-sequence tokens.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rap._imports import require
from rap.errors import ConfigError, InvalidInput

def conversation_template(
    name: str,
    default_system: str,
    system: tuple[str, str],
    user: tuple[str, str],
    assistant: tuple[str, str],
    generation_prompt: str,
) -> str:
    """One of the LLaVA code base's conversation layouts as a Jinja chat template.

    Each message is written as ``before + text + after`` with its role's pair,
    the system prompt (the messages' own, or ``default_system``) likewise, and
    images as ``<image>`` where the content lists them, which is how LLaVA's
    ``get_prompt`` lays a conversation out for every separator style rap needs.
    """

    def literal(text: str) -> str:
        return json.dumps(text)  # a Jinja string literal: same quoting and escapes

    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{ content }}"
        "{%- else -%}{%- for item in content -%}"
        "{%- if item['type'] == 'image' -%}{{ '<image>' }}{%- else -%}{{ item['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        "{%- if messages[0]['role'] == 'system' -%}"
        "{%- set system = render(messages[0]['content']) -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}"
        f"{{%- set system = {literal(default_system)} -%}}{{%- set loop_messages = messages -%}}"
        "{%- endif -%}"
        f"{{{{- {literal(system[0])} + system + {literal(system[1])} -}}}}"
        "{%- for message in loop_messages -%}"
        f"{{%- if message['role'] == 'user' -%}}{{{{- {literal(user[0])} + render(message['content']) + {literal(user[1])} -}}}}"
        f"{{%- elif message['role'] == 'assistant' -%}}"
        f"{{{{- {literal(assistant[0])} + render(message['content']) + {literal(assistant[1])} -}}}}"
        f"{{%- else -%}}{{{{- raise_exception({literal(name + ' chats have user and assistant turns only')}) -}}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- {literal(generation_prompt)} -}}}}{{%- endif -%}}"
    )


V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

LLAVA_V1_CHAT_TEMPLATE = conversation_template(
    "LLaVA v1", V1_SYSTEM, system=("", " "), user=("USER: ", " "), assistant=("ASSISTANT: ", "</s>"),
    generation_prompt="ASSISTANT:",
)  # fmt: skip
"""LLaVA's ``v1`` conversation (``conv_vicuna_v1``, separator style TWO) as a chat template.

``SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:``: the system prompt, a
space, then each user message followed by a space (``sep``) and each reply
followed by ``</s>`` (``sep2``). The beginning-of-sequence token is left to the
tokenizer, as LLaVA's ``tokenizer_image_token`` does. RAP-LLaVA was trained
with ``--version v1``, which selects this template, whose system prompt speaks
of a curious *user*; LLaVA's ``llava_v1`` has the same layout with a curious
*human*, and the official CLI picks ``llava_v0`` for a model whose name lacks
"v1". rap uses what training used.
"""

PHI3_CHAT_TEMPLATE = conversation_template(
    "LLaVA-Phi-3", "You are a helpful AI assistant.", system=("<|system|>\n", "<|end|>"),
    user=("\n<|user|>\n", "<|end|>"), assistant=("\n<|assistant|>\n", "<|end|>"), generation_prompt="\n<|assistant|>\n",
)  # fmt: skip
"""LLaVA++'s ``phi3_instruct`` conversation (separator style MPT) as a chat template.

``<|system|>\\nSYSTEM<|end|>\\n<|user|>\\nq1<|end|>\\n<|assistant|>\\na1<|end|>\\n<|user|>\\nq2<|end|>\\n<|assistant|>\\n``:
the system turn, then each message after its role, each followed by ``<|end|>``.
RAP-Phi3-V was trained with ``--version phi3_instruct``, which selects it.
"""


@dataclass(frozen=True)
class TextFamily:
    """What differs between the language models LLaVA checkpoints are built on."""

    config_class: str  # the transformers config of the language model
    chat_template: str  # the conversation training used
    stop_tokens: tuple[str, ...] = ()  # tokens that end a reply besides the config's end-of-sequence


LLAMA = TextFamily("LlamaConfig", LLAVA_V1_CHAT_TEMPLATE)
PHI3 = TextFamily("Phi3Config", PHI3_CHAT_TEMPLATE, stop_tokens=("<|end|>",))
TEXT_FAMILIES = {"llava_llama": LLAMA, "llama": LLAMA, "llava_phi": PHI3, "llava_phi3": PHI3, "phi3": PHI3}
"""The language model family of an original-format checkpoint, by its config's ``model_type``."""

IMAGE_TOKEN = "<image>"
# buffers that transformers computes and old checkpoints still carry
_COMPUTED_BUFFERS = ("rotary_emb.inv_freq", "embeddings.position_ids")
# legacy keys the source configs use that transformers still reads (into rope_parameters)
_LEGACY_TEXT_KEYS = {"rope_theta", "rope_scaling"}


def convert_llava_checkpoint(source_dir: str | Path, target_dir: str | Path, vision_tower: str | None = None) -> Path:
    """Write an llava-hf folder at ``target_dir`` from the original-format LLaVA checkpoint in ``source_dir``.

    ``vision_tower`` is the CLIP vision tower's hub name or folder; by default
    the source config's ``mm_vision_tower`` (``openai/clip-vit-large-patch14-336``
    for LLaVA-1.5), which must then be in the hub cache when offline. Its config
    and image processor are always needed; its weights only when the checkpoint
    lacks them. The folder is written next to ``target_dir`` and moved into
    place when complete, so a failed conversion leaves nothing behind.
    Returns the target folder.
    """
    torch = require("torch", "paper")
    transformers = require("transformers", "paper")
    source, target = Path(source_dir), Path(target_dir)
    if target.exists() and any(target.iterdir()):
        raise InvalidInput(f"{target} is not empty; choose a new folder to convert into")
    settings = _source_settings(source)
    family = TEXT_FAMILIES[settings["model_type"]]
    tower = vision_tower or settings["mm_vision_tower"]
    try:
        vision_config = transformers.CLIPVisionConfig.from_pretrained(tower)
        clip_processor = transformers.AutoImageProcessor.from_pretrained(tower)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, ImportError) as exc:  # ImportError: a SentencePiece tokenizer without its library
        raise ConfigError(f"cannot load the vision tower {tower!r} or the tokenizer in {source} ({exc})") from None
    if vision_config.hidden_size != settings["mm_hidden_size"]:
        raise ConfigError(
            f"vision tower {tower!r} has width {vision_config.hidden_size}, the checkpoint expects "
            f"{settings['mm_hidden_size']}; pass the tower it was trained with"
        )
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        token = transformers.AddedToken(IMAGE_TOKEN, special=True, normalized=False)
        tokenizer.add_tokens([token], special_tokens=True)
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    parts = _split_weights(_source_tensors(source, torch))
    dtype = parts["language_model"]["embed_tokens.weight"].dtype
    text_config = _text_config(settings, getattr(transformers, family.config_class))
    text_config.vocab_size = max(text_config.vocab_size, len(tokenizer))
    for part, key in (("language_model", "embed_tokens.weight"), ("lm_head", "weight")):
        parts[part][key] = _grow_rows(parts[part][key], text_config.vocab_size, torch)
    if not parts["vision_tower"]:
        try:
            clip = transformers.CLIPVisionModel.from_pretrained(tower)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the checkpoint has no vision tower weights and {tower!r} cannot be loaded ({exc})"
            ) from None
        parts["vision_tower"] = clip.state_dict()
    strategy = "default" if settings["mm_vision_select_feature"] == "patch" else "full"  # full keeps CLS
    config = transformers.LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_index,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2 + (strategy == "full"),
        vision_feature_layer=settings["mm_vision_select_layer"],
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
    )
    config.dtype = dtype
    with torch.device("meta"):  # no memory and no random init for weights about to be replaced
        model = transformers.LlavaForConditionalGeneration(config)
    for name, module in (
        ("language_model", model.model.language_model),
        ("lm_head", model.lm_head),
        ("projector", model.model.multi_modal_projector),
        ("vision_tower", model.model.vision_tower),
    ):
        _place(module, parts[name], name, dtype)
    stops = [tokenizer.convert_tokens_to_ids(token) for token in family.stop_tokens if token in tokenizer.get_vocab()]
    if stops:
        model.generation_config.eos_token_id = [text_config.eos_token_id, *stops]

    processor = transformers.LlavaProcessor(
        image_processor=_image_processor(clip_processor, settings["image_aspect_ratio"] == "pad", transformers),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        chat_template=family.chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's class token
    )
    _save(model, processor, target)
    return target


def _source_settings(source: Path) -> dict[str, Any]:
    """The source config, checked to be a LLaVA-1.5-style checkpoint that llava-hf can express."""
    try:
        settings = json.loads((source / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{source} has no readable config.json ({exc})") from None
    if "mm_vision_tower" not in settings or "mm_hidden_size" not in settings:
        raise ConfigError(
            f"{source} is not an original-format LLaVA checkpoint (no mm_vision_tower in config.json); "
            "a folder in the transformers format needs no conversion"
        )
    model_type = settings.get("model_type")
    if model_type not in TEXT_FAMILIES:
        raise ConfigError(
            f"{source} is a {model_type!r} LLaVA checkpoint; Llama-based (LLaVA-1.5, RAP-LLaVA) and "
            "Phi-3-based (LLaVA-Phi-3, RAP-Phi3-V) ones convert"
        )
    settings.setdefault("mm_projector_type", "linear")
    settings.setdefault("mm_vision_select_layer", -2)
    settings.setdefault("mm_vision_select_feature", "patch")
    settings.setdefault("image_aspect_ratio", "square")
    refusals = {
        "mm_projector_type": (settings["mm_projector_type"] != "mlp2x_gelu", "only the mlp2x_gelu projector converts"),
        "mm_use_im_start_end": (bool(settings.get("mm_use_im_start_end")), "image start/end tokens are not supported"),
        "mm_vision_select_feature": (
            settings["mm_vision_select_feature"] not in ("patch", "cls_patch"),
            "the feature must be patch or cls_patch",
        ),
        "image_aspect_ratio": (
            settings["image_aspect_ratio"] not in ("pad", "square", None),
            "only pad and square images convert (anyres is LLaVA-NeXT)",
        ),
    }
    for key, (refused, why) in refusals.items():
        if refused:
            raise ConfigError(f"{source}: {key}={settings[key]!r}: {why}")
    return settings


def _source_tensors(source: Path, torch: Any) -> Iterator[tuple[str, Any]]:
    """Every tensor of the checkpoint, shard by shard: safetensors if present, else pytorch .bin."""
    shards = sorted(source.glob("*.safetensors")) or sorted(source.glob("pytorch_model*.bin"))
    shards = [shard for shard in shards if not shard.name.startswith("adapter_")]
    if not shards:
        raise ConfigError(
            f"{source} has no model weights (*.safetensors or pytorch_model*.bin); "
            "a LoRA adapter must be merged into its base model first"
        )
    for shard in shards:
        if shard.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(shard), framework="pt") as opened:
                for key in opened.keys():
                    yield key, opened.get_tensor(key)
        else:
            yield from torch.load(shard, map_location="cpu", mmap=True, weights_only=True).items()


def _split_weights(tensors: Iterator[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """Sort the source tensors by the module they belong to, under that module's own names."""
    parts: dict[str, dict[str, Any]] = {"language_model": {}, "lm_head": {}, "projector": {}, "vision_tower": {}}
    prefixes = (
        ("model.mm_projector.", "projector"),
        ("model.vision_tower.vision_tower.", "vision_tower"),
        ("model.", "language_model"),
        ("lm_head.", "lm_head"),
    )
    for key, tensor in tensors:
        if key.endswith(_COMPUTED_BUFFERS):
            continue
        part, name = next(((p, key[len(prefix) :]) for prefix, p in prefixes if key.startswith(prefix)), (None, key))
        if part is None:
            raise ConfigError(f"unexpected tensor {key!r} in the checkpoint; is it a LLaVA-1.5 model?")
        if part == "projector":
            layer, _, rest = name.partition(".")
            if layer not in ("0", "2"):
                raise ConfigError(f"unexpected projector tensor {key!r}; only mlp2x_gelu converts")
            name = f"linear_{1 if layer == '0' else 2}.{rest}"
        parts[part][name] = tensor
    if "embed_tokens.weight" not in parts["language_model"] or "weight" not in parts["lm_head"]:
        raise ConfigError("the checkpoint lacks model.embed_tokens or lm_head; is it complete?")
    return parts


def _text_config(settings: dict[str, Any], config_class: Any) -> Any:
    """The language model's config with the source's own settings, leaving out LLaVA's additions."""
    known = set(config_class().to_dict()) | _LEGACY_TEXT_KEYS
    known -= {"model_type", "architectures", "transformers_version", "_name_or_path"}
    return config_class(**{key: value for key, value in settings.items() if key in known})


def _grow_rows(weight: Any, rows: int, torch: Any) -> Any:
    """``weight`` with rows added up to ``rows``, each the mean of the existing rows."""
    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)])


def _place(module: Any, state: dict[str, Any], what: str, dtype: Any) -> None:
    """Put ``state`` into a meta-device ``module`` as its weights, refusing any mismatch."""
    if not any(key.startswith("vision_model.") for key in module.state_dict()):
        # CLIP's weights sit under vision_model. in checkpoints, but not in transformers 5's module
        state = {key.removeprefix("vision_model."): value for key, value in state.items()}
    state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"the {what} weights do not fit the model: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )


def _save(model: Any, processor: Any, target: Path) -> None:
    """Write the folder beside ``target`` and move it into place only once complete."""
    staging = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if target.exists():  # empty, as checked before converting
            target.rmdir()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _image_processor(clip_processor: Any, pad: bool, transformers: Any) -> Any:
    """LLaVA's image processor with the tower's CLIP settings, padding to a square first if ``pad``.

    The PIL implementation is built because it needs no torchvision; the
    folder records the processor type only, and a loader with torchvision
    installed uses that backend, whose resizing differs from PIL's (which
    LLaVA trained with) by rounding.
    """
    settings = clip_processor.to_dict()
    keep = ("size", "crop_size", "resample", "image_mean", "image_std", "rescale_factor", "do_resize", "do_center_crop")
    return transformers.LlavaImageProcessorPil(**{key: settings[key] for key in keep if key in settings}, do_pad=pad)

"""``rap train merge``: a LoRA adapter folded into its base, saved as a full checkpoint.

The merged folder is an ordinary checkpoint of the base's family with the
base's tokenizer, image processor and chat template, so the family's backend
(``llava:<folder>``, ``qwen2-vl:<folder>``) loads it with no PEFT installed and
without the adapter's extra matrix products at every step. Merging is exact
arithmetic (W + B·A·alpha/r), done here in float32 whatever the base's
precision, and saved in the base's own precision; the tests check that the
merged model gives the adapted model's logits.
"""

from __future__ import annotations

from pathlib import Path

from rap._imports import require
from rap.errors import ConfigError


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Write ``base`` with the LoRA ``adapter`` merged into ``out``; returns ``out``."""
    torch = require("torch", "train")
    peft = require("peft", "train")
    transformers = require("transformers", "train")
    from rap.training.family import load_family

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} has no adapter_config.json; give the output folder of rap train")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; give a new folder for the merged checkpoint")
    try:
        saved_dtype = _saved_dtype(transformers.AutoConfig.from_pretrained(str(base)), torch)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the config of {base} ({exc}); give the base the adapter was trained on") from None
    family = load_family(str(base), torch.float32)
    try:
        model = peft.PeftModel.from_pretrained(family.model, str(adapter))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ConfigError(f"adapter {adapter} does not fit {base} ({' '.join(str(exc).split())[:200]})") from None
    merged = model.merge_and_unload().to(saved_dtype)
    merged.save_pretrained(out)
    family.save_processor(out)
    return out


def _saved_dtype(config: object, torch: object) -> object:
    """The precision the base was saved in (float32 when it does not say)."""
    name = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return getattr(torch, name.removeprefix("torch."), torch.float32)  # type: ignore[attr-defined]

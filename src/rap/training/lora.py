"""Which weights LoRA adapts: the language model's attention and MLP projections.

The paper fine-tunes RAP-LLaVA with LoRA (rank 128, alpha 256). The vision
tower and the projector stay frozen: the CLIP features of a concept's image are
what the model learns to compare against the photo's, so they must not drift,
and the vision-feature cache at inference relies on the tower being the base's.
"""

from __future__ import annotations

from typing import Any

from rap._imports import require

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGET_MODULES = rf".*language_model.*\.({'|'.join(PROJECTIONS)})"
"""A PEFT regex: the projections inside the language model only, in every family rap trains.

LLaVA's ``vision_tower`` and ``multi_modal_projector`` and Qwen's ``visual``
(whose Qwen2.5-VL blocks have ``*_proj`` layers too) lie outside it.
"""


def with_lora(model: Any, rank: int, alpha: int, dropout: float) -> Any:
    """``model`` wrapped by PEFT, only the LoRA weights trainable."""
    peft = require("peft", "train")
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGET_MODULES, bias="none"
    )
    return peft.get_peft_model(model, config)

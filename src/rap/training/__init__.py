"""Fine-tuning rap's transformers backends on personalization conversations (``rap train``).

:func:`train` adapts a LLaVA, Qwen2-VL or Qwen2.5-VL checkpoint with LoRA on
RAP-style JSONL data, building every prompt with the code inference uses;
:func:`merge_adapter` folds the adapter back into a checkpoint the family's
backend (``llava`` or ``qwen2-vl``) loads. Needs the
``train`` extra (peft; tensorboard for logs).
"""

from __future__ import annotations

from rap.training.merge import merge_adapter
from rap.training.trainer import TrainOptions, TrainResult, train

__all__ = ["TrainOptions", "TrainResult", "merge_adapter", "train"]

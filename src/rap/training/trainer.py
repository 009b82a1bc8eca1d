"""``rap train``: LoRA fine-tuning of a LLaVA or Qwen2-VL checkpoint on personalization conversations.

The loop is transformers' ``Trainer``, which runs on accelerate: the same call
trains on one device, or on several under ``accelerate launch`` or
``torchrun``: data parallel, or sharded with FSDP (``fsdp``) or DeepSpeed ZeRO
(``deepspeed``: a config file, or ``zero2`` / ``zero3``, which ship with rap). It also
brings gradient accumulation, mixed precision, activation checkpointing,
checkpoints that resume with the step count, optimizer and schedule intact, and
logging to the console and TensorBoard. What rap adds is the data (records read
as rap prompts, :mod:`rap.training.data` and :mod:`rap.training.encode`, laid
out by the model family's backend, :mod:`rap.training.family`) and which
weights LoRA adapts (:mod:`rap.training.lora`).

Defaults are the paper's: LoRA rank 128, alpha 256, learning rate 1e-4, one
epoch, at most 2 concepts per sample for LLaVA; dropout 0.05, a 3% warmup and a
cosine schedule are LLaVA's fine-tuning recipe, which RAP follows.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rap._imports import require
from rap.errors import ConfigError
from rap.training.data import Record, read_jsonl
from rap.training.encode import ChatEncoder, collate
from rap.training.family import load_family
from rap.training.lora import with_lora

log = logging.getLogger(__name__)

BUNDLED_DEEPSPEED = ("zero2", "zero3")
"""DeepSpeed configs that ship with rap (``training/deepspeed/``): every size left to the Trainer ("auto")."""


class TrainOptions(BaseModel):
    """Settings of ``rap train``."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(128, ge=1, description="LoRA rank (the paper: 128)")
    alpha: int = Field(256, ge=1, description="LoRA alpha (the paper: 256)")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    learning_rate: float = Field(1e-4, gt=0, description="peak learning rate (the paper: 1e-4)")
    epochs: float = Field(1.0, gt=0, description="passes over the data (the paper: 1)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(1, ge=1, description="conversations per device per step")
    gradient_accumulation: int = Field(1, ge=1, description="steps whose gradients add up before each update")
    warmup: float = Field(0.03, ge=0, lt=1, description="share of the steps spent warming the learning rate up")
    max_concepts: int | None = Field(
        None, ge=0, le=16,
        description="concepts kept per sample; default what the backend injects (the paper: 2 for LLaVA, 3 for Phi-3)",
    )
    max_length: int = Field(2048, ge=16, description="longest conversation in tokens, image tokens included")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto is bf16 where CUDA supports it, fp32 elsewhere"
    )
    activation_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, slower")
    workers: int = Field(
        4, ge=0, le=64, description="processes per device that decode images and encode conversations "
        "while the model trains (LLaVA's 4); 0 encodes in the training process, between steps"
    )
    save_steps: int = Field(500, ge=1, description="steps between checkpoints")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept (None: all)")
    logging_steps: int = Field(10, ge=1, description="steps between log lines")
    seed: int = Field(0, description="seed of the LoRA initialisation and the data order")
    image_root: str | None = Field(None, description="folder the records' image paths are relative to (default: the JSONL's)")
    fsdp: str | None = Field(None, description="FSDP sharding, as transformers takes it, e.g. 'full_shard auto_wrap'")
    deepspeed: str | None = Field(
        None, description="a DeepSpeed JSON config file, or zero2 / zero3 for rap's own (the paper trained with ZeRO-3)"
    )

    @field_validator("deepspeed")
    @classmethod
    def _readable_json(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if path in BUNDLED_DEEPSPEED:
            path = str(Path(__file__).parent / "deepspeed" / f"{path}.json")
        try:
            json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read DeepSpeed config {path} ({exc})") from None
        return path

    @model_validator(mode="after")
    def _one_sharding(self) -> TrainOptions:
        if self.fsdp and self.deepspeed:
            raise ValueError("choose FSDP or DeepSpeed, not both")
        return self


@dataclass
class TrainResult:
    """What a run did: where the adapter is, how far it got, and what it skipped."""

    adapter_dir: Path
    steps: int
    losses: list[float]
    records: int
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    """Wall time of the training loop (model loading excluded)."""
    samples_per_second: float = 0.0
    """Conversations trained on per second, over all processes."""


def train(
    base: str | Path,
    data: str | Path,
    output_dir: str | Path,
    options: TrainOptions | None = None,
    resume: bool | str | Path = False,
) -> TrainResult:
    """Fine-tune ``base`` (a LLaVA or Qwen2-VL folder or hub name) with LoRA on the JSONL ``data``.

    Checkpoints go to ``output_dir/checkpoint-<step>``, TensorBoard logs to
    ``output_dir/runs`` and the final adapter (``save_pretrained``) to
    ``output_dir`` itself. ``resume`` is a checkpoint folder, or True for the
    latest one in ``output_dir``.
    """
    options = options or TrainOptions()
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    if options.deepspeed:
        require("deepspeed", "deepspeed")
    if options.fsdp and _processes() < 2:
        raise ConfigError(
            "FSDP shards the model across processes; launch several: "
            "torchrun --nproc_per_node=N -m rap train ... (or accelerate launch)"
        )
    bf16 = options.precision == "bf16" or (
        options.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    family = load_family(str(base), torch.bfloat16 if bf16 else torch.float32)
    max_concepts = options.max_concepts if options.max_concepts is not None else family.max_concepts
    dataset = read_jsonl(data, max_concepts, options.image_root)
    if dataset.skipped:
        log.warning("skipped %d of %d records: %s", dataset.skipped_count,
                    dataset.skipped_count + len(dataset.records), dataset.describe_skipped())
    encoder = ChatEncoder(family, options.max_length)
    transformers.set_seed(options.seed)  # the same LoRA initialisation in every process and every run
    model = with_lora(family.model, options.rank, options.alpha, options.dropout)
    if options.activation_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a graph
    trainer = transformers.Trainer(
        model=model,
        args=_arguments(transformers, options, Path(output_dir), bf16),
        train_dataset=_Examples(dataset.records, encoder),
        data_collator=functools.partial(collate, pad_token_id=_pad_id(family.tokenizer)),
    )
    metrics = trainer.train(resume_from_checkpoint=_checkpoint(resume, Path(output_dir))).metrics
    trainer.save_model(str(output_dir))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return TrainResult(
        Path(output_dir), trainer.state.global_step, losses, len(dataset.records), dataset.skipped,
        seconds=float(metrics.get("train_runtime", 0.0)), samples_per_second=float(metrics.get("train_samples_per_second", 0.0)),
    )  # fmt: skip


class _Examples:
    """The records as a map-style dataset, each encoded (images decoded) when asked for."""

    def __init__(self, records: list[Record], encoder: ChatEncoder) -> None:
        self.records = records
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.encoder.encode(self.records[index].turns())


def _arguments(transformers: Any, options: TrainOptions, output_dir: Path, bf16: bool) -> Any:
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if not tensorboard:
        log.warning("tensorboard is not installed: logging to the console only (pip install 'rap-mllm[train]')")
    return transformers.TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.gradient_accumulation,
        learning_rate=options.learning_rate,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1,
        warmup_steps=options.warmup,
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        bf16=bf16,
        **_checkpointing(transformers, options.activation_checkpointing),
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=options.save_total_limit,
        logging_steps=options.logging_steps,
        logging_first_step=True,
        report_to=["tensorboard"] if tensorboard else "none",
        use_cpu=_needs_cpu_flag(bf16),
        ddp_backend="gloo" if _needs_cpu_flag(bf16) and _processes() > 1 else None,  # NCCL needs CUDA
        remove_unused_columns=False,  # the collator's keys are the model's; nothing to drop
        dataloader_num_workers=options.workers,
        seed=options.seed,
        fsdp=options.fsdp,
        deepspeed=options.deepspeed,
        disable_tqdm=True,  # one printed line per log step, readable in a job's log file
    )


def _checkpointing(transformers: Any, enabled: bool) -> dict[str, Any]:
    """The Trainer's activation checkpointing arguments, under the name this transformers uses.

    transformers 5.23 renamed ``gradient_checkpointing`` to ``activation_checkpointing``
    and keeps the old name as a deprecated alias.
    """
    names = {field.name for field in dataclasses.fields(transformers.TrainingArguments)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": enabled, f"{prefix}_checkpointing_kwargs": {"use_reentrant": False} if enabled else None}


def _processes() -> int:
    """How many processes torchrun or accelerate launch started for this job (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _needs_cpu_flag(bf16: bool) -> bool:
    """Whether accelerate must be told the job runs on the CPU: several processes, or bf16, without CUDA.

    Without the flag it neither joins processes into one distributed job (each
    would train alone) nor autocasts to bf16 on the CPU. Elsewhere it is left
    unset, so that accelerate picks the device (CUDA, or Apple's MPS).
    """
    import torch

    return not torch.cuda.is_available() and (_processes() > 1 or bf16)


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _checkpoint(resume: bool | str | Path, output_dir: Path) -> str | None:
    """The checkpoint to resume from, or None to start afresh.

    ``resume=True`` takes the Trainer's own choice (``get_last_checkpoint``), so
    rap agrees with transformers on which ``checkpoint-<step>`` folder is newest.
    """
    if resume is False:
        return None
    if resume is True:
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if found is None:
            raise ConfigError(f"no checkpoint to resume from in {output_dir}; train without resume first")
        return found
    if not Path(resume).is_dir():
        raise ConfigError(f"checkpoint {resume} does not exist; give a checkpoint-<step> folder of an earlier run")
    return str(resume)

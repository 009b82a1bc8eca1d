"""LoRA training throughput and peak memory, and what they mean for RAP-260K.

Builds a random-weight LLaVA-1.5 (``--size 7b`` is the real architecture),
adds LoRA (r 128, alpha 256: the paper's), and times optimizer steps on
conversations shaped like the paper's training data: a query photo and two
concept crops (3 x 576 image tokens at 7B) and a short question and answer,
encoded by rap's own training encoder. The first steps are warm-up and are not
timed. From samples per second it estimates the hours one epoch of RAP-260K
(260k samples) takes on 8 GPUs of this kind. It also times the data side: how
many samples one data-loading worker encodes per second (photos decoded,
prompt laid out, tokens and pixels made), which ``rap train --workers`` must
keep above the GPU's rate.

    python benchmarks/train_throughput.py --size 7b          # on a GPU
    python benchmarks/train_throughput.py --size tiny        # smoke test on a CPU
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the random checkpoints are test support

from rap.sample_photos import FOLDER as PHOTOS  # noqa: E402

RAP_260K = 260_000
ENCODE_REPEATS = 20
RECORD = {
    "id": "sample",
    "image": [str(PHOTOS / "dog_01.jpg"), str(PHOTOS / "dog_00.jpg"), str(PHOTOS / "cat_00.jpg")],
    "conversations": [
        {"from": "human", "value": "<image>\n[1.<image>\n Name: <bo>, Info: <bo> is a corgi with a ginger coat.\n"
                                   "2.<image>\n Name: <kit>, Info: <kit> is a ginger tabby cat.\n]"
                                   "Give a short caption of this image."},
        {"from": "gpt", "value": "<bo> is sitting on the grass in a sunny park, his tongue out, looking at the camera."},
    ],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "7b"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    args = parser.parse_args()
    import torch

    from rap.training.data import read_jsonl
    from rap.training.encode import ChatEncoder, collate
    from rap.training.family import load_family
    from rap.training.lora import with_lora
    from support.random_models import save_random_llava

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    with tempfile.TemporaryDirectory() as scratch:
        folder = save_random_llava(Path(scratch) / "llava", args.size, "bfloat16" if cuda else "float32", "cuda" if cuda else "cpu")
        data = Path(scratch) / "data.jsonl"
        data.write_text(json.dumps(RECORD) + "\n")
        family = load_family(str(folder), dtype)
        model = with_lora(family.model.to("cuda" if cuda else "cpu"), args.rank, 2 * args.rank, 0.05)
        if args.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        record, encoder = read_jsonl(data, max_concepts=2).records[0], ChatEncoder(family, max_length=4096)
        start = time.perf_counter()
        for _ in range(ENCODE_REPEATS):  # what one data worker keeps up with: photos decoded, prompt laid out
            encoded = encoder.encode(record.turns())
        encode_per_s = ENCODE_REPEATS / (time.perf_counter() - start)
        batch = collate([encoded] * args.batch_size, pad_token_id=0)
        batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        step = functools.partial(_step, model, optimizer, batch)
        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / args.steps
    samples_per_s = args.batch_size / seconds
    tokens = int(batch["input_ids"].shape[1])
    print(json.dumps({
        "model": f"llava-1.5-{args.size} (random) + LoRA r{args.rank}",
        "machine": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "tokens_per_sample": tokens,
        "samples_per_s": round(samples_per_s, 2),
        "tokens_per_s": round(samples_per_s * tokens),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
        "hours_rap260k_1_epoch_8_gpus_of_this_kind": round(RAP_260K / (8 * samples_per_s) / 3600, 1),
        "encoded_samples_per_s_per_worker": round(encode_per_s, 1),
    }))  # fmt: skip


def _step(model, optimizer, batch) -> None:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()

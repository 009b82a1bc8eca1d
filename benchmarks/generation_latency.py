"""Time to first token and decode speed with 0 to 3 injected concepts, cached and uncached.

Builds a random-weight LLaVA-1.5 or Qwen2.5-VL (``--size 7b`` is the real
architecture; random weights give honest timings), saves it, and loads it
through rap's ``llava`` or ``qwen2-vl`` backend, the path users take. For each number of concepts it asks the same
question about a photo, and measures:

* time to first token (prefill, vision encoding included);
* decode speed over a fixed number of new tokens;
* both with the concept-feature cache warmed (``prepare_concepts``) and off.

The photo is 1280x960 and each concept's reference 512x512, as a phone photo
and a crop of one would be: LLaVA sees every image at 336x336 whatever its
size, while Qwen's token counts follow the pixels, up to each image's budget.

    python benchmarks/generation_latency.py --size 7b --dtype bfloat16          # on a GPU
    python benchmarks/generation_latency.py --arch qwen2.5-vl --size 7b --dtype bfloat16
    python benchmarks/generation_latency.py --size 7b --dtype bfloat16 --static-cache --compile
    python benchmarks/generation_latency.py --size tiny                         # smoke test on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the random checkpoints are test support
from support.random_models import save_random_llava, save_random_qwen2_vl  # noqa: E402

from rap.generation import GenerationOptions, PromptConcept, create_generator, user_turn  # noqa: E402
from rap.sample_photos import FOLDER as PHOTOS  # noqa: E402


QUERY_SIZE = (1280, 960)  # a phone photo, as Qwen's default budget (about 1,280 tokens) takes it
CONCEPT_SIZE = (512, 512)  # a reference crop, larger than either backend's concept budget
CONCEPT_PHOTOS = ["dog_00.jpg", "cat_00.jpg", "teapot_00.jpg"]


def photo(name: str, size: tuple[int, int]) -> Image.Image:
    """A bundled photo at a realistic size: token counts (Qwen's) follow the pixels, not the content."""
    return Image.open(PHOTOS / name).convert("RGB").resize(size)


def measure(generator, concepts: int, new_tokens: int, repeats: int) -> tuple[dict[str, float], str]:
    """Time to first token and decode speed with ``concepts`` injected, and the answer decoded."""
    query = photo("dog_01.jpg", QUERY_SIZE)
    injected = [
        PromptConcept(f"<c{n}>", "a thing the user owns", photo(name, CONCEPT_SIZE), image_key=f"key-{n}")
        for n, name in enumerate(CONCEPT_PHOTOS[:concepts])
    ]
    turn = user_turn("What is in this photo?", query, injected)
    answers = []

    def timed(tokens: int) -> float:
        """Median seconds to generate ``tokens`` new tokens (a warm-up run first)."""
        options = GenerationOptions(max_new_tokens=tokens)
        runs = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            answers.append(generator.generate([turn], options))
            runs.append(time.perf_counter() - start)
        return statistics.median(runs[1:])

    # Time to first token is a one-token generation: prefill, vision encoding and one step.
    # (Text streamers flush on word boundaries, so the first streamed piece can come later.)
    ttft = timed(1)
    total = timed(new_tokens)
    timings = {"ttft_ms": round(1000 * ttft, 1), "decode_tokens_per_s": round((new_tokens - 1) / (total - ttft), 1)}
    return timings, answers[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["llava", "qwen2.5-vl"], default="llava")
    parser.add_argument("--size", choices=["tiny", "7b"], default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--static-cache", action="store_true", help="decode with a static KV cache")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decoding step (CUDA)")
    parser.add_argument("--model-dir", type=Path, help="keep the random model here, and reuse one already there")
    args = parser.parse_args()
    import torch
    from transformers import GenerationConfig

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    backend = "llava" if args.arch == "llava" else "qwen2-vl"
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model_dir or Path(scratch) / "model"
        if not (folder / "config.json").exists():
            if args.arch == "llava":
                save_random_llava(folder, args.size, args.dtype, device)
            else:
                save_random_qwen2_vl(folder, "qwen2_5_vl", 1280 * 28 * 28, args.size, args.dtype, device)
            # No end-of-sequence: a random model then always decodes the number of tokens asked for.
            config = GenerationConfig.from_pretrained(folder)
            config.eos_token_id = None
            config.save_pretrained(folder)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        answers: dict[tuple[str, int], str] = {}
        for cache_size, label in ((64, "cached"), (0, "uncached")):
            generator = create_generator(
                f"{backend}:{folder}", device=device, dtype=args.dtype, concept_cache_size=cache_size,
                static_cache=args.static_cache, compile=args.compile,
            )  # fmt: skip
            keys = {f"key-{n}": photo(name, CONCEPT_SIZE) for n, name in enumerate(CONCEPT_PHOTOS)}
            generator.prepare_concepts(keys)
            for concepts in range(4):
                result, answers[label, concepts] = measure(generator, concepts, args.new_tokens, args.repeats)
                print(json.dumps({"model": f"{args.arch}-{args.size} (random)", "machine": machine, "dtype": args.dtype,
                                  "static_cache": args.static_cache, "compile": args.compile,
                                  "concepts": concepts, "features": label} | result), flush=True)  # fmt: skip
            del generator
        # cached features must not change the answer (issue 3): the same tokens, decoded greedily
        for concepts in range(1, 4):
            same = answers["cached", concepts] == answers["uncached", concepts]
            print(json.dumps({"model": f"{args.arch}-{args.size} (random)", "check": "cached features, same answer",
                              "concepts": concepts, "same": same}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

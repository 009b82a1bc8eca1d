"""Retrieval speed per real photo: one photo end to end, and photos per second in batches.

Every subject of a DreamBooth-layout folder becomes a concept keyed by its first
photo (``00.jpg``), and a person concept (a photo with a face, by default the
test suite's astronaut) makes the face path run too; every other photo is a
query. "End to end" is what ``Retriever.retrieve`` does with a file path:
decode, regions, faces, embedding and search. Wall and CPU time are both
reported, since a shared machine inflates the first.

    python benchmarks/photo_retrieval_speed.py ../shared/data/dreambooth-full --single 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from rap import LocalConceptStore, NewConcept, Retriever
from rap.retrieval.match_model import MatchModel, Verification
from rap.settings import default, resolve

PERSON = Path(__file__).resolve().parents[1] / "tests" / "photos" / "astronaut.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="DreamBooth-layout folder (subject folders of NN.jpg)")
    parser.add_argument("--encoder", default=default("encoder"))
    parser.add_argument("--faces", default=default("faces"))
    parser.add_argument("--detector", default=default("detector"))
    parser.add_argument("--image-side", type=int, help="shorter side photos are decoded to (default: the settings')")
    parser.add_argument("--person", type=Path, default=PERSON, help="a photo with a face, remembered as a person")
    parser.add_argument("--single", type=int, default=30, help="photos timed one at a time")
    parser.add_argument("--batch", type=int, default=0, help="photos timed in batches (0: all queries)")
    parser.add_argument("--verify", action="store_true", help="label with the fitted match model and spatial verification (the verify setting)")
    args = parser.parse_args()
    subjects = sorted(p for p in args.data.iterdir() if (p / "00.jpg").exists())
    queries = [q for s in subjects for q in sorted(s.glob("*.jpg")) if q.name != "00.jpg"]
    with tempfile.TemporaryDirectory() as scratch:
        with LocalConceptStore(Path(scratch) / "s", encoder=args.encoder, faces=args.faces, settings=resolve().settings) as store:
            concepts = [NewConcept(s.name, [s / "00.jpg"], category="thing") for s in subjects]
            store.add_many([*concepts, NewConcept("person", [args.person], category="person")])
            options: dict[str, object] = {"image_side": args.image_side} if args.image_side else {}
            if args.verify:
                options["verification"] = Verification(MatchModel.from_mapping(default("match_model")), default("verify_top"), default("verify_side"))
            retriever = Retriever(store, args.detector, **options)
            retriever.retrieve(queries[-1])  # load the models: a one-off cost, not a photo's
            single_wall, single_cpu = [], []
            for query in queries[: args.single]:
                wall, cpu = time.perf_counter(), time.process_time()
                retriever.retrieve(query)
                single_wall.append(time.perf_counter() - wall)
                single_cpu.append(time.process_time() - cpu)
            batch = queries[: args.batch or len(queries)]
            wall, cpu = time.perf_counter(), time.process_time()
            retriever.retrieve_batch(batch)
            batch_wall, batch_cpu = time.perf_counter() - wall, time.process_time() - cpu
            spaces = store.spaces()
            runtime = getattr(store.embedder.encoder, "runtime", None)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                **cpu_kind(),
                "load_average": [round(load, 2) for load in os.getloadavg()],
                "encoder": args.encoder,
                "encoder_runtime": runtime,
                "detector": args.detector,
                "verify": args.verify,
                "faces": args.faces if "face" in spaces else "none",
                "image_side": args.image_side or getattr(retriever, "image_side", None),
                "concepts": len(subjects) + 1,
                "single_photos": len(single_wall),
                "single_p50_ms": round(1000 * statistics.median(single_wall), 1),
                "single_p90_ms": round(1000 * sorted(single_wall)[int(0.9 * (len(single_wall) - 1))], 1),
                "single_cpu_p50_ms": round(1000 * statistics.median(single_cpu), 1),
                "batch_photos": len(batch),
                "batch_photos_per_s": round(len(batch) / batch_wall, 2),
                "batch_cpu_ms_per_photo": round(1000 * batch_cpu / len(batch), 1),
            }
        ),
        flush=True,
    )


def cpu_kind() -> dict[str, object]:
    """The CPU's model and the vector extensions ONNX Runtime's int8 kernels choose between:
    speed differs by kind (VNNI sums int8 products in one instruction, AVX2 in three)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"cpu": model, "cpu_flags": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]}


if __name__ == "__main__":
    main()

"""Retrieval recall@1/5 on the DreamBooth subjects: whole image, detector crops, both.

Each of the 30 subjects becomes one concept keyed by its first photo (00.jpg),
with its class as the category; every other photo of it is a query. The other
subjects of the same class (7 dogs, 4 plush toys, ...) are the hard negatives.

    python benchmarks/dreambooth_retrieval.py ../shared/data/dreambooth --encoder offline:efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from rap import LocalConceptStore, NewConcept, Retriever
from rap.settings import default, resolve


def subjects(root: Path) -> dict[str, str]:
    """Subject -> class, from the dataset's prompts_and_classes.txt."""
    classes: dict[str, str] = {}
    for line in (root / "prompts_and_classes.txt").read_text().splitlines():
        name, _, cls = line.strip().partition(",")
        if cls and (root / name).is_dir():
            classes[name] = cls
    return classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--encoder", default=default("encoder"))
    parser.add_argument("--faces", default="none")
    parser.add_argument("--detector", default="multiscale")
    parser.add_argument("--image-side", type=int, default=default("image_side"), help="shorter side photos are decoded to")
    args = parser.parse_args()
    classes = subjects(args.data)
    with tempfile.TemporaryDirectory() as scratch, LocalConceptStore(Path(scratch) / "s", encoder=args.encoder, faces=args.faces, image_side=args.image_side, settings=resolve().settings) as store:
        store.add_many([NewConcept(s, [args.data / s / "00.jpg"], category=c) for s, c in classes.items()])
        queries = [(s, p) for s in classes for p in sorted((args.data / s).glob("*.jpg")) if p.name != "00.jpg"]
        for mode in ("image", "regions", "both"):
            retriever = Retriever(
                store,
                "none" if mode == "image" else args.detector,
                top_k=5,
                threshold=math.inf,
                whole_image=mode != "regions",
                image_side=args.image_side,
            )
            start = time.perf_counter()
            hits1 = hits5 = 0
            for begin in range(0, len(queries), 8):
                chunk = queries[begin : begin + 8]
                for (subject, _), result in zip(chunk, retriever.retrieve_batch([p for _, p in chunk])):
                    names = result.names()
                    hits1 += names[:1] == [subject]
                    hits5 += subject in names[:5]
            seconds = time.perf_counter() - start
            print(
                json.dumps(
                    {
                        "encoder": args.encoder,
                        "detector": "none" if mode == "image" else args.detector,
                        "queries": mode,
                        "image_side": args.image_side,
                        "concepts": len(classes),
                        "n_queries": len(queries),
                        "recall_at_1": round(hits1 / len(queries), 3),
                        "recall_at_5": round(hits5 / len(queries), 3),
                        "ms_per_image": round(1000 * seconds / len(queries), 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()

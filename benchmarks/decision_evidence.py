"""Everything a match decision could use, per query photo and candidate: one JSON line each.

Runs the retriever in the paper's always-K mode (every match kept, top 5) on
one of two protocols, at each store size N:

* ``dreambooth``: today's protocol (``hard_retrieval.py``): subjects remembered
  from a whole photo and queried with their other whole photos, strangers'
  photos as negatives. **The tuning set**: constants are fitted on it.
* ``avatar``: ``avatar_set.py``: remembered from a tight crop, queried with
  photos composited small into cluttered scenes. **The reporting set**: never fitted on.

Both use the same distractor concepts (``hard_retrieval.distractor``, same
seeds), so one ``--cache`` of crop vectors serves both. Each line holds the
query's truth (None for a stranger's photo), what today's decision returned
(the default threshold, ratio test; ``--decide-verified``: the retriever's
with the verify setting on), and the top candidates with distance,
score, region, box and, for the first ``--verify`` of them, the spatial
verification inliers (:mod:`rap.retrieval.verify`) against the region that
matched and against the whole working image, and the CPU time that took.
``fit_decision.py`` reads these lines.

    python benchmarks/decision_evidence.py ../shared/data/dreambooth-full avatar --out avatar.jsonl --cache vectors.npz
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import avatar_set  # noqa: E402
from dreambooth_retrieval import subjects  # noqa: E402
from hard_retrieval import CachedEncoder, distractor, grow, roles  # noqa: E402

from rap import LocalConceptStore, NewConcept, Retriever  # noqa: E402
from rap.encoders import create_encoder  # noqa: E402
from rap.images import load_image, reduced  # noqa: E402
from rap.retrieval.match_model import MatchModel, Verification  # noqa: E402
from rap.retrieval.verify import Verifier  # noqa: E402
from rap.settings import default  # noqa: E402


def rotation_set(args: argparse.Namespace, rotation: int, scratch: Path):
    """(remembered concepts, queries as (truth, path), distractor source subjects) for one rotation."""
    classes = subjects(args.data)
    if args.protocol == "avatar":
        built = avatar_set.build(args.data, scratch / f"avatar-{rotation}", rotation, args.seed)
        concepts = [NewConcept(name, [path], category=category) for name, (category, path) in built.remembered.items()]
        return concepts, [(q.truth, Path(q.path)) for q in built.queries], list(built.distractor_sources)
    remembered, sources, never = roles(sorted(classes), rotation)
    concepts = [NewConcept(s, [args.data / s / "00.jpg"], category=classes[s]) for s in remembered]
    queries = [(s, p) for s in remembered for p in sorted((args.data / s).glob("*.jpg")) if p.name != "00.jpg"]
    queries += [(None, p) for s in never for p in sorted((args.data / s).glob("*.jpg"))]
    return concepts, queries, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("protocol", choices=("dreambooth", "avatar"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="30,630")
    parser.add_argument("--rotations", default="0,1,2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-photo", type=int, default=13)
    parser.add_argument("--verify", type=int, default=3, help="candidates verified per photo")
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--detector", default=default("detector"))
    parser.add_argument("--decide-verified", action="store_true", help="'decided' by the retriever with the verify setting on, not today's rule")
    parser.add_argument("--whole-image", action="store_true", help="also verify against the whole working image")
    parser.add_argument("--query-side", type=int, default=480, help="longer side a query region is reduced to for features")
    parser.add_argument("--reference-side", type=int, default=480, help="longer side a reference image is reduced to for features")
    args = parser.parse_args()
    classes = subjects(args.data)
    encoder = CachedEncoder(create_encoder(default("encoder")), args.cache)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with args.out.open("w") as out, tempfile.TemporaryDirectory() as tmp:
        for rotation in (int(r) for r in args.rotations.split(",")):
            concepts, queries, sources = rotation_set(args, rotation, Path(tmp))
            rng = random.Random(rotation)  # distractors as hard_retrieval cuts them, from 512-px copies (memory)
            pool = [
                (name, distractor(load_image(photo, shorter_side=512).image, rng))
                for name in sources
                for photo in sorted((args.data / name).glob("*.jpg"))
                for _ in range(args.per_photo)
            ]
            rng.shuffle(pool)
            with LocalConceptStore(Path(tmp) / f"store-{rotation}", encoder=encoder, faces="none") as store:
                store.add_many(concepts)
                verifier = Verifier(store, query_side=args.query_side, reference_side=args.reference_side)
                for size in sizes:
                    pool = grow(store, size, pool, classes)
                    ranking = Retriever(store, args.detector, threshold=math.inf, top_k=5, cpu_threads=1)
                    verification = Verification(MatchModel.from_mapping(default("match_model")), default("verify_top"), default("verify_side"))
                    deciding = Retriever(store, args.detector, top_k=5, cpu_threads=1, verification=verification if args.decide_verified else None)
                    for truth, path in queries:
                        started = time.process_time()
                        found = ranking.retrieve(path)
                        retrieve_s = time.process_time() - started
                        decided = deciding.retrieve(path).matches()
                        working, size_full = reduced(path, ranking.image_side)
                        scale = working.width / size_full[0]
                        regions: dict[object, object] = {}
                        candidates, verify_s, whole_s = [], 0.0, 0.0
                        for rank, hit in enumerate(found.concepts):
                            row = hit.to_dict() | {"rank": rank}
                            if rank < args.verify:
                                started = time.process_time()
                                box = tuple(round(v * scale) for v in hit.box) if hit.box else None
                                if box not in regions:
                                    regions[box] = verifier.query(working, box)
                                row["inliers"] = verifier.inliers(hit.concept, regions[box])
                                verify_s += time.process_time() - started
                                if args.whole_image:
                                    started = time.process_time()
                                    if "whole" not in regions:
                                        regions["whole"] = verifier.query(working, None)
                                    row["inliers_image"] = verifier.inliers(hit.concept, regions["whole"])
                                    whole_s += time.process_time() - started
                            candidates.append(row)
                        line = {
                            "protocol": args.protocol,
                            "rotation": rotation,
                            "n": len(store),
                            "query": str(path),
                            "truth": truth,
                            "decided": decided,
                            "candidates": candidates,
                            "retrieve_cpu_ms": round(1000 * retrieve_s, 1),
                            "verify_cpu_ms": round(1000 * verify_s, 1),
                            "verify_whole_cpu_ms": round(1000 * whole_s, 1),
                        }
                        out.write(json.dumps(line) + "\n")
                        out.flush()
                    encoder.save()
                    print(json.dumps({"protocol": args.protocol, "rotation": rotation, "n": len(store)}), flush=True)


if __name__ == "__main__":
    main()

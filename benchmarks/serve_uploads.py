"""Large uploads to `rap serve`: the server's peak memory, and whether other requests still get answers.

Two measures, each against a fresh `rap serve --no-auth` in its own process:

``memory``: ``--parallel`` requests at once, each adding a concept from
``--images`` single-colour PNGs of ``--side`` x ``--side`` pixels (each
compresses to a few kilobytes and decodes to megabytes: the cheapest way to ask
a server for memory). Reports the server's resident memory before and its
peak during the requests (sampled every 10 ms), its CPU time, and the answers' statuses.

``healthz``: ``--parallel`` clients keep uploading 12-megapixel JPEGs (photos
of ``photos`` upscaled to 4000x3000 into a temporary folder) to
``/v1/retrieve`` for ``--seconds``, while a probe asks ``/healthz`` every
50 ms; reports the probe's p50/p99/max latency. A decode on the event loop
shows here as a p99 of whole decodes.

``--src`` runs the server from another checkout's ``src`` (e.g. main's, for the
"before" figures). Each run prints one JSON line.

    python benchmarks/serve_uploads.py memory --side 4000
    python benchmarks/serve_uploads.py healthz ../shared/data/dreambooth-full --seconds 30
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import rap_serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(src: Path, home: str, args: argparse.Namespace) -> Iterator[tuple[str, psutil.Process]]:
    env = os.environ | {
        "RAP_HOME": home, "RAP_ENCODER": args.encoder, "RAP_DETECTOR": "none", "RAP_FACES": "none",
        "RAP_RATE_LIMIT": "1000000", "RAP_REQUEST_TIMEOUT": "1800", "HF_HUB_OFFLINE": "1", "RAP_CPU_THREADS": "1",
        "PYTHONPATH": str(src),
    }  # fmt: skip
    with rap_serve(env, "--no-auth") as (url, server):
        yield url, psutil.Process(server.pid)


@contextmanager
def sampled_rss(process: psutil.Process) -> Iterator[dict[str, float]]:
    """The most resident memory the process held while the block ran, sampled every 10 ms (the
    high-water mark alone would show the model loading at start-up, not the requests)."""
    seen = {"peak_mib": process.memory_info().rss / 2**20}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            seen["peak_mib"] = max(seen["peak_mib"], process.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (40, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def memory(args: argparse.Namespace, url: str, process: psutil.Process) -> dict:
    picture = _png(args.side)
    with httpx.Client(base_url=url, timeout=1800) as http:  # warm: the first add loads what loads lazily
        http.post("/v1/concepts", data={"name": "warm"}, files=[("image", ("w.png", _png(64), "image/png"))]).raise_for_status()
    before, cpu_before = process.memory_info().rss / 2**20, sum(process.cpu_times()[:2])
    started = time.perf_counter()

    def add(n: int) -> int:
        files = [("image", (f"{i}.png", picture, "image/png")) for i in range(args.images)]
        with httpx.Client(base_url=url, timeout=1800) as http:
            return http.post("/v1/concepts", data={"name": f"c{n}"}, files=files).status_code

    with sampled_rss(process) as seen, ThreadPoolExecutor(args.parallel) as pool:
        statuses = list(pool.map(add, range(args.parallel)))
    return {
        "request_mib": round(len(picture) * args.images / 2**20, 2),
        "rss_before_mib": round(before),
        "rss_peak_mib": round(seen["peak_mib"]),
        "rss_growth_mib": round(seen["peak_mib"] - before),
        "server_cpu_s": round(sum(process.cpu_times()[:2]) - cpu_before, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
    }


def _photos(folder: Path, count: int, target: Path) -> list[bytes]:
    """``count`` photos of ``folder`` upscaled to 4000x3000 JPEGs (12 megapixels, as a phone takes them)."""
    made = []
    for n, path in enumerate(sorted(folder.rglob("*.jpg"))[:count]):
        out = target / f"{n}.jpg"
        Image.open(path).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
        made.append(out.read_bytes())
    return made


def healthz(args: argparse.Namespace, url: str, process: psutil.Process, photos: list[bytes]) -> dict:
    stop = time.perf_counter() + args.seconds
    uploads: list[float] = []

    def upload(n: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            i = n
            while time.perf_counter() < stop:
                started = time.perf_counter()
                http.post("/v1/retrieve", files=[("image", ("q.jpg", photos[i % len(photos)], "image/jpeg"))]).raise_for_status()
                uploads.append(time.perf_counter() - started)
                i += 1

    probes: list[float] = []
    cpu_before = sum(process.cpu_times()[:2])
    workers = [threading.Thread(target=upload, args=(n,)) for n in range(args.parallel)]
    for worker in workers:
        worker.start()
    with httpx.Client(base_url=url, timeout=600) as http:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            http.get("/healthz").raise_for_status()
            probes.append(time.perf_counter() - started)
            time.sleep(0.05)
    for worker in workers:
        worker.join()
    ordered = sorted(probes)
    return {
        "healthz_n": len(probes),
        "healthz_p50_ms": round(1000 * statistics.median(probes), 1),
        "healthz_p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "healthz_max_ms": round(1000 * ordered[-1], 1),
        "uploads": len(uploads),
        "upload_p50_ms": round(1000 * statistics.median(uploads), 1) if uploads else None,
        "server_cpu_s": round(sum(process.cpu_times()[:2]) - cpu_before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measure", choices=["memory", "healthz"])
    parser.add_argument("photos", type=Path, nargs="?", help="healthz: a folder of photos to upscale (e.g. ../shared/data/dreambooth-full)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--images", type=int, default=16, help="memory: PNGs per request")
    parser.add_argument("--side", type=int, default=4000, help="memory: each PNG's side in pixels")
    parser.add_argument("--seconds", type=float, default=30, help="healthz: how long the clients upload")
    parser.add_argument("--encoder", default="offline:efficientnet-lite0-int8")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the code the server runs (another checkout's src for 'before')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as scratch:
        photos = _photos(args.photos, 8, Path(scratch)) if args.measure == "healthz" else []
        with serve(args.src.resolve(), home, args) as (url, process):
            row = memory(args, url, process) if args.measure == "memory" else healthz(args, url, process, photos)
    settings = {"parallel": args.parallel} | ({"images": args.images, "side": args.side} if args.measure == "memory" else {"seconds": args.seconds})
    print(json.dumps({"benchmark": f"serve_uploads-{args.measure}", "src": str(args.src), **settings, **row,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores (shared)"}))  # fmt: skip


if __name__ == "__main__":
    main()

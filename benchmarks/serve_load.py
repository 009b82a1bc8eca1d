"""Load on `rap serve`: concurrent clients on loopback mixing retrieve, ask and concept adds.

Starts `rap serve` in its own process (so clients and server do not share an
interpreter), makes a user, seeds a few concepts, then runs ``--clients``
clients for ``--seconds``: each loops over retrieve (60%), ask (20%, with a
photo: retrieval plus generation by ``--generator``) and add (20%: a new
concept). It reports throughput, p50/p99 latency per kind and the errors
(any non-2xx: zero is the target), then checks that every acknowledged
concept is listed and retrievable.

    python benchmarks/serve_load.py ../shared/data/dreambooth --clients 50 --seconds 60
    python benchmarks/serve_load.py ../shared/data/dreambooth --store-url postgresql://...   # the shared store
    python benchmarks/serve_load.py ../shared/data/dreambooth --store-url pgserver   # a throwaway PostgreSQL

On PostgreSQL the benchmark's user and key live in that database too, as a
deployment's would. ``--store-url pgserver`` starts a throwaway PostgreSQL +
pgvector for the run (the bundled server that ``rap db`` runs), and deletes it after.

The generation queue is sized to the clients and the deadline is long, so
backpressure shows as latency, not as 503s or 504s: with one CPU generator,
asks wait behind each other (the server's own mean generation and retrieval
times are reported beside the clients' latencies).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from rap.settings import default

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import rap_serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _rap(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rap", *args], env=env, capture_output=True, text=True, check=True)


async def _client(http: httpx.AsyncClient, n: int, photos: list[bytes], deadline: float, seeded: list[str], log: dict) -> None:
    rng = random.Random(n)
    count = 0
    while time.perf_counter() < deadline:
        kind = rng.choices(["retrieve", "ask", "add"], [6, 2, 2])[0]
        image = [("image", ("q.jpg", rng.choice(photos), "image/jpeg"))]
        started = time.perf_counter()
        try:
            if kind == "retrieve":
                response = await http.post("/v1/retrieve", files=image)
            elif kind == "ask":
                response = await http.post("/v1/ask", data={"question": f"What is <{rng.choice(seeded)}> doing?"}, files=image)
            else:
                name = f"u{n}_{count}"
                count += 1
                response = await http.post("/v1/concepts", data={"name": name, "category": "thing"}, files=image)
                if response.status_code == 201:
                    log["acknowledged"].append(name)
            ok = response.is_success
        except httpx.HTTPError as exc:
            ok, response = False, exc
        log["latency"].setdefault(kind, []).append(time.perf_counter() - started)
        if not ok:
            log["errors"].append(f"{kind}: {getattr(response, 'status_code', response)} {getattr(response, 'text', '')[:200]}")


async def _verify(http: httpx.AsyncClient, acknowledged: list[str]) -> dict:
    listed, cursor = set(), None
    while True:
        page = (await http.get("/v1/concepts", params={"cursor": cursor} if cursor else {})).json()
        listed |= {c["name"] for c in page["concepts"]}
        if not (cursor := page["next_cursor"]):
            break
    missing = [name for name in acknowledged if name not in listed]
    unretrievable = []
    for name in acknowledged:
        found = (await http.post("/v1/retrieve", data={"text": f"where is {name}?"})).json()
        if name not in [c["name"] for c in found.get("concepts", [])]:
            unretrievable.append(name)
    return {"acknowledged": len(acknowledged), "missing": len(missing), "unretrievable": len(unretrievable)}


def _server_means(text: str) -> dict[str, float]:
    """Mean retrieval and generation time per call, as the server's own metrics measured them."""
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("rap_retrieval_seconds_sum", "rap_retrieval_seconds_count", "rap_generation_seconds_sum", "rap_generation_seconds_count"):
            values[name] = float(value)
    return {
        f"server_{kind}_mean_ms": round(1000 * values[f"rap_{kind}_seconds_sum"] / values[f"rap_{kind}_seconds_count"], 1)
        for kind in ("retrieval", "generation")
        if values.get(f"rap_{kind}_seconds_count")
    }


async def _run(args: argparse.Namespace, url: str, key: str, photos: list[bytes]) -> dict:
    limits = httpx.Limits(max_connections=args.clients + 5)
    timeout = httpx.Timeout(600.0)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=timeout) as http:
        seeded = []
        for n, photo in enumerate(photos[: args.seed]):
            response = await http.post("/v1/concepts", data={"name": f"s{n}", "category": "thing"}, files=[("image", ("s.jpg", photo, "image/jpeg"))])
            response.raise_for_status()
            seeded.append(f"s{n}")
        await http.post("/v1/ask", data={"question": "warm up <s0>"})  # first generation loads lazily-built parts
        log: dict = {"latency": {}, "errors": [], "acknowledged": []}
        started = time.perf_counter()
        deadline = started + args.seconds
        await asyncio.gather(*(_client(http, n, photos, deadline, seeded, log) for n in range(args.clients)))
        wall = time.perf_counter() - started
        verified = await _verify(http, log["acknowledged"])
        metrics = _server_means((await http.get("/metrics")).text)
    requests = sum(len(v) for v in log["latency"].values())
    row = {
        "clients": args.clients,
        "seconds": round(wall, 1),
        "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "errors": len(log["errors"]),
    }
    for kind, values in sorted(log["latency"].items()):
        row[f"{kind}_n"] = len(values)
        row[f"{kind}_p50_ms"] = round(1000 * statistics.median(values), 1)
        row[f"{kind}_p99_ms"] = round(1000 * _percentile(values, 0.99), 1)
    row |= verified | metrics
    if log["errors"]:
        print("\n".join(log["errors"][:10]), file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of photos, searched recursively (e.g. ../shared/data/dreambooth)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=10, help="concepts added before the clients start")
    parser.add_argument("--encoder", default=default("encoder"))
    parser.add_argument("--detector", default="none", help="the region detector (multiscale is the offline profile's; none: whole image)")
    parser.add_argument("--generator", default="offline:smollm2", help="the backend ask uses")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--request-timeout", type=float, default=1800, help="the server's deadline: asks queue behind one CPU generator")
    parser.add_argument(
        "--store-url", default=None,
        help="the store the server uses (RAP_STORE_URL): postgresql://..., or pgserver for a throwaway one; default: embedded stores",
    )  # fmt: skip
    args = parser.parse_args()
    photos = [path.read_bytes() for path in sorted(args.photos.rglob("*.jpg"))]
    with ExitStack() as stack:
        home = stack.enter_context(tempfile.TemporaryDirectory())
        if args.store_url == "pgserver":
            from rap.store.postgres_server import throwaway_server

            args.store_url = stack.enter_context(throwaway_server())
        env = os.environ | {
            "RAP_HOME": home, "RAP_ENCODER": args.encoder, "RAP_DETECTOR": args.detector, "RAP_FACES": "none",
            "RAP_GENERATOR": args.generator, "RAP_MAX_NEW_TOKENS": str(args.max_new_tokens),
            "RAP_GENERATION_QUEUE": str(args.clients), "RAP_RATE_LIMIT": "1000000", "RAP_REQUEST_TIMEOUT": str(args.request_timeout), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        }  # fmt: skip
        if args.store_url:
            env["RAP_STORE_URL"] = args.store_url
        key = json.loads(_rap(env, "users", "add", "bench", "--json").stdout)["key"]
        with rap_serve(env) as (url, _):
            row = asyncio.run(_run(args, url, key, photos))
    row = {
        "store": "postgresql" if args.store_url else "embedded",
        "encoder": args.encoder,
        "generator": args.generator,
        "max_new_tokens": args.max_new_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    } | row
    print(json.dumps(row))


if __name__ == "__main__":
    main()

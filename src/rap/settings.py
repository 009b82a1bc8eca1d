"""Every setting, declared once, and where each value in force came from.

Values are resolved in this order, later winning: the built-in default, the
active profile (built in, or from the config file), the config file's top level,
an environment variable, and an explicit argument (a command-line flag).
``rap config show`` prints the result with each value's source.

The config file is TOML, at ``$RAP_HOME/config.toml`` unless ``RAP_CONFIG``
names another::

    profile = "paper"          # which profile is active
    top_k = 3                  # top-level values override the profile

    [profiles.mine]            # a profile of your own
    encoder = "clip:/models/clip-vit-large-patch14-336"
    detector = "owlv2:/models/owlv2"
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rap.errors import ConfigError
from rap.images import MAX_FILE_BYTES, MAX_PIXELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


#: fitted by benchmarks/fit_decision.py on the DreamBooth protocol (rotations 0 and 1, N = 30 and 630,
#: full-size photos; the cut: best acceptance with false matches <= 0.15 there); reported on the
#: avatar protocol, which fitted nothing (BENCHMARKS.md, "Retrieve: a match decision that generalizes")
_MATCH_MODEL: dict[str, Any] = {
    "weights": {"distance": -5.7015, "ratio": -7.5984, "inliers": 0.7443, "whole_image": 1.1035, "log_concepts": -0.0524},
    "bias": 9.5605,
    "cut": 0.25,
    "encoder": "offline:efficientnet-lite0-int8",
}


def _default_home() -> Path:
    from platformdirs import user_data_path

    return user_data_path("rap", appauthor=False)


class Settings(BaseModel):
    """The settings rap knows; each field's description is its help text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default_factory=_default_home, description="rap's folder for config and the default store (RAP_HOME)")
    db: Path | None = Field(None, description="the concept store folder; default: $RAP_HOME/store (RAP_DB, --db)")
    store_url: str | None = Field(None, description="the concept store, if not the folder: local:PATH or postgresql://... (RAP_STORE_URL, --store)")
    store_user: str = Field("local", description="whose concepts a shared store (postgresql) holds for this command (RAP_STORE_USER)")
    pgvector_exact_below: int = Field(10_000, ge=0, description="PostgreSQL searches a user's vectors exactly up to this many per space, through the HNSW index above")
    pgvector_ef_search: int = Field(200, ge=1, le=1000, description="HNSW candidate list size (hnsw.ef_search) of an approximate PostgreSQL search")
    encoder: str = Field("offline:efficientnet-lite0-int8", description="image encoder that keys the store: the default is EfficientNet-Lite0 quantized to int8 (7-bit weights: the same vectors on every CPU), about 2x less CPU than offline:efficientnet-lite0 for the same recall (RAP_ENCODER, --encoder)")
    faces: str = Field("dlib", description="face analyzer for concepts of a person category, or 'none' (RAP_FACES)")
    detector: str = Field("multiscale", description="region detector for query images (RAP_DETECTOR, --detector)")
    top_k: int = Field(2, ge=1, le=100, description="concepts retrieved per query (RAP_TOP_K, -k)")
    per_region_k: int = Field(2, ge=1, le=100, description="nearest reference images kept per region, as in the paper")
    generator: str = Field("offline:smollm2", description="generation backend (RAP_GENERATOR, --backend)")
    model: str | None = Field(None, description="model for the backend, replacing the spec's argument (RAP_MODEL, --model)")
    generator_options: dict[str, Any] = Field(default_factory=dict, description="the backend's own options, e.g. {max_concepts = 3}")
    max_new_tokens: int = Field(256, ge=1, le=8192, description="longest reply in tokens (RAP_MAX_NEW_TOKENS)")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature; 0 decodes greedily (RAP_TEMPERATURE)")
    threshold: float | None = Field(None, ge=0, description="max Euclidean distance for an image match; unset: the store's calibrated operating point (rap calibrate --apply), else the encoder's; inf labels every candidate a match, as the paper keeps all (RAP_THRESHOLD)")
    strict_matches: bool = Field(False, description="retrieval keeps only the candidates labelled a match, as before 'rank, then decide'; default: the top K, each labelled match true or false, weak ones labelled weak for the model (RAP_STRICT_MATCHES)")
    max_false_matches: float = Field(0.15, ge=0, le=1, description="rap calibrate: the largest share of photos of none of your concepts that may get a concept labelled a match; the threshold it proposes maximises acceptance under it")
    calibrate_min_photos: int = Field(10, ge=1, description="rap calibrate: photos it needs in none/, and of your concepts in all, before it says anything")
    image_side: int = Field(720, ge=64, le=8192, description="photos are decoded reduced to this shorter side (px) before regions, faces and embeddings: a 1/2 crop still has 360 px for a 336-px encoder, and JPEG decodes at 1/2 to 1/8 scale, so a 12-megapixel phone photo (3024 px) decodes at 1/4 (756 px) in half the time 768 would take (RAP_IMAGE_SIDE)")
    face_side: int = Field(480, ge=64, le=8192, description="faces are looked for on a copy of a photo reduced to this shorter side (px), then described at full size: the detector's cost grows with pixels; it finds faces of 80 px and more there (RAP_FACE_SIDE)")
    search_threads: int = Field(1, ge=0, le=256, description="threads one FAISS search uses; 0: FAISS's default (every core). A photo's dozen queries took 3.9 ms on 2 threads and 0.03 ms on one on a shared 2-core machine, where waiting threads spin")
    encoder_runtime: Literal["auto", "torch", "onnxruntime"] = Field("auto", description="what runs the offline float32 image encoder: onnxruntime (2.4x less CPU per crop than torch, measured), torch, or auto: onnxruntime when installed, else torch; the int8 one runs on onnxruntime only (RAP_ENCODER_RUNTIME)")
    cpu_threads: int = Field(0, ge=0, le=256, description="CPU threads retrieval works on: photos decoded, crops embedded (one single-threaded encoder run each) and faces found at once; 0: every core (a folder of photos went from 6 to 10 a second on 2 idle cores, float encoder); 1 where the cores are shared with other work (RAP_CPU_THREADS)")
    batch_images: int = Field(8, ge=1, le=256, description="photos decoded and retrieved together; memory held is this many reduced photos, whatever the number given (RAP_BATCH_IMAGES)")
    verify: bool = Field(False, description="label image matches with the fitted match model (match_model) and spatial verification (SIFT features of the top candidates' references matched to the region that matched, a RANSAC similarity fit, the inliers weighed in) instead of the distance threshold and ratio test; off by default: on the held-out avatar set it did not beat them, for ~100 ms more CPU a photo (BENCHMARKS.md) (RAP_VERIFY)")
    verify_top: int = Field(3, ge=1, le=20, description="candidates per photo that spatial verification checks, best first")
    verify_side: int = Field(320, ge=64, le=4096, description="longer side (px) a query region and a reference image are reduced to for spatial verification")
    match_model: dict[str, Any] = Field(
        default_factory=lambda: dict(_MATCH_MODEL),
        description="the fitted match decision (rap.retrieval.match_model): logistic weights over distance, ratio to the nearest other concept, log(1 + inliers), whole-image region and log N, a bias and the probability cut; fitted by benchmarks/fit_decision.py on the DreamBooth protocol; holds for the encoder it names",
    )
    locate_box_vote: float = Field(0.04, ge=0, le=1, description="locate by retriever: regions within this distance of the best one vote on the box (weighted by closeness); 0 takes the best region's box")
    # -- rap photos: your photo library searched by your concepts --------------------------
    photos_limit: int = Field(50, ge=1, description="photos `rap photos find` lists at most (--limit)")
    photos_min_photos: int = Field(5, ge=2, description="fewest photos a subject must recur in for `rap photos suggest` to offer it (--min-photos)")
    photos_references: int = Field(5, ge=1, le=50, description="reference crops `rap photos name` takes from a suggested group to make its concept")
    # -- rap serve: every limit the service enforces ---------------------------------------
    max_upload_bytes: int = Field(MAX_FILE_BYTES, ge=1024, description="largest image a request may upload, in bytes (RAP_MAX_UPLOAD_BYTES)")
    max_image_pixels: int = Field(MAX_PIXELS, ge=64, description="largest image a request may upload, in pixels: refuses decompression bombs (RAP_MAX_IMAGE_PIXELS)")
    max_images_per_request: int = Field(16, ge=1, le=1000, description="most image files one request may upload")
    max_chat_images: int = Field(2, ge=1, le=100, description="most images one /v1/chat/completions request may carry (rap looks at the latest; a chat client resends earlier ones): its body may be this many images as base64, plus text")
    max_text_chars: int = Field(4000, ge=1, description="longest question or text a request may send, in characters")
    max_page_size: int = Field(200, ge=1, description="most concepts one page of GET /v1/concepts returns")
    max_thumbnail_side: int = Field(1024, ge=16, description="largest ?size= for a concept image thumbnail, in pixels")
    request_timeout: float = Field(300.0, gt=0, description="seconds a request may run before the service answers 504 (RAP_REQUEST_TIMEOUT)")
    rate_limit: int = Field(600, ge=1, description="requests per minute one API key may send to one worker (RAP_RATE_LIMIT)")
    generation_slots: int = Field(1, ge=1, le=64, description="answers one worker generates at once (RAP_GENERATION_SLOTS)")
    generation_queue: int = Field(16, ge=0, description="requests that may wait for a generation slot; beyond that: 503 with Retry-After (RAP_GENERATION_QUEUE)")
    retry_after: int = Field(5, ge=1, description="seconds a client told 503 (generation queue full) is asked to wait before retrying")
    open_stores: int = Field(256, ge=1, description="users' stores one worker keeps open; the least recently used is dropped beyond that")
    max_request_pixels: int = Field(256_000_000, ge=64, description="total pixels of the images one request may upload, read from their headers before any is decoded; beyond: 413")
    max_decoding_pixels: int = Field(128_000_000, ge=64, description="pixels one worker decodes at once, over every request (an image costs its full size while it decodes, unless it is a JPEG, which decodes reduced); more wait their turn: this bounds the worker's memory, at about 4 bytes a pixel (RAP_MAX_DECODING_PIXELS)")
    allowed_hosts: list[str] = Field(default_factory=list, description="host names the service answers to besides the address it listens on (and localhost on loopback), e.g. the name a proxy serves it under; '*' answers any: other Host headers get 400, which stops DNS rebinding (RAP_ALLOWED_HOSTS, comma-separated)")
    cors_origins: list[str] = Field(default_factory=list, description="web origins (https://app.example) whose pages may call the API from a browser and send it writes; none by default: only the service's own pages may (RAP_CORS_ORIGINS, comma-separated)")
    failed_signins: str = Field("10/minute", description="wrong API keys one client address may send before it is refused with 429 and Retry-After, as the limits package writes a rate (RAP_FAILED_SIGNINS)")

    @property
    def store_path(self) -> Path:
        return self.db if self.db is not None else self.home / "store"

    @property
    def store_spec(self) -> str:
        """The store to open, as a registry spec: ``store_url``, else ``local:`` the store folder."""
        return self.store_url or f"local:{self.store_path}"

    @property
    def server_path(self) -> Path:
        """Where ``rap serve`` keeps its users' stores: ``$RAP_HOME/server``."""
        return self.home / "server"

    @property
    def generator_spec(self) -> str:
        """The generator spec with ``model`` (if set) as its argument."""
        if self.model is None:
            return self.generator
        return f"{self.generator.partition(':')[0]}:{self.model}"


def default(name: str) -> Any:
    """The built-in default of one setting: what a library caller gets without resolving settings."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


ENV_PREFIX = "RAP_"
BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    # Everything from PyPI: runs air-gapped, in CI and on a laptop. It is the built-in defaults.
    "offline": {name: default(name) for name in ("encoder", "detector", "faces", "generator", "top_k")},
    # A bare scheme stands for the model its backend declares as its default (one place for
    # each name): "clip" is CLIP ViT-L/14-336, "owlv2" OWLv2 base, "qwen2-vl" Qwen2.5-VL-7B.
    # The paper's setup: CLIP ViT-L/14-336 keys, an open-vocabulary detector.
    "paper": {
        "encoder": "clip",
        "detector": "owlv2",
        "faces": "dlib",
        # the official checkpoint is in the original LLaVA layout: `rap convert llava` it first
        "generator": "llava:Hoar012/RAP-LLaVA-13b",
        "top_k": 2,
    },
    # A modern model to try without fine-tuning; its dynamic resolution keeps concept avatars cheap.
    "qwen": {
        "encoder": "clip",
        "detector": "owlv2",
        "faces": "dlib",
        "generator": "qwen2-vl",
        "top_k": 3,
    },
    # Any OpenAI-compatible server (vLLM, SGLang, Ollama, LM Studio, hosted APIs);
    # endpoint and key from RAP_OPENAI_BASE_URL and RAP_OPENAI_API_KEY.
    "openai": {
        "encoder": default("encoder"),
        "detector": "multiscale",
        "faces": "dlib",
        "generator": "openai",
        "top_k": 3,
    },
}
DEFAULT_PROFILE = "offline"


@dataclass(frozen=True)
class Resolved:
    """Settings in force, with the source of each value."""

    settings: Settings
    sources: dict[str, str]
    profile: str
    config_file: Path | None = None
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def explicit(self, name: str) -> bool:
        """Whether the user chose this value (rather than it being a built-in default)."""
        return not self.sources[name].startswith("default")


def _config_path(home: Path, environ: Mapping[str, str]) -> Path:
    return Path(environ["RAP_CONFIG"]) if environ.get("RAP_CONFIG") else home / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _parse_env(name: str, raw: str) -> Any:
    if name == "threshold" and raw.strip().lower() in {"inf", "none", "off"}:
        return float("inf") if raw.strip().lower() == "inf" else None
    if name in ("generator_options", "match_model"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be a JSON object ({exc.msg})") from None
    if Settings.model_fields[name].annotation == list[str]:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def resolve(
    overrides: Mapping[str, Any] | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve the settings in force; ``overrides`` are explicit arguments (None = not given)."""
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {name: "default" for name in Settings.model_fields}

    home = overrides.get("home") or environ.get("RAP_HOME")
    home_path = Path(home).expanduser() if home else _default_home()
    config_file = _config_path(home_path, environ)
    config = _read_config(config_file)
    file_profiles = config.pop("profiles", {}) or {}
    if not isinstance(file_profiles, dict):
        raise ConfigError(f"config file {config_file}: [profiles] must be a table of tables")
    profiles = {**BUILTIN_PROFILES, **file_profiles}

    chosen = profile or environ.get("RAP_PROFILE") or config.pop("profile", None)
    config.pop("profile", None)
    implicit = chosen is None
    chosen = chosen or DEFAULT_PROFILE
    if chosen not in profiles:
        raise ConfigError(f"unknown profile {chosen!r}; known: {', '.join(sorted(profiles))}")
    layers = [
        (
            f"default (profile {chosen})" if implicit else f"profile {chosen}" + (" (config file)" if chosen in file_profiles else ""),
            profiles[chosen],
        ),
        (f"config file {config_file}", config),
        ("environment", {n: _parse_env(n, environ[ENV_PREFIX + n.upper()]) for n in Settings.model_fields if ENV_PREFIX + n.upper() in environ}),
        ("argument", overrides),
    ]
    for source, layer in layers:
        for name, value in layer.items():
            if name not in Settings.model_fields:
                raise ConfigError(f"{source}: unknown setting {name!r}; known: {', '.join(Settings.model_fields)}")
            values[name] = value
            sources[name] = source
    values["home"] = home_path
    sources["home"] = "argument" if "home" in overrides else "environment" if home else "default"
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"setting {where} ({sources.get(where, 'default')}): {first['msg']}") from None
    return Resolved(settings, sources, chosen, config_file if config_file.exists() else None, profiles)

"""``rap data build``: from annotated images to personalization training conversations.

The pipeline of the paper's Fig. 3: read scenes from the sources, cut each
concept's reference crop (and augmented copies) in a process pool, name the
concept and have the annotator describe it, turn each scene into samples of
every task, add noise concepts to a share of them, have the annotator write the
open answers, and write LLaVA-format conversations.

The output folder holds ``data.jsonl`` (one conversation a line), ``crops/``
and ``manifest.json``. In each record's ``image`` list the query image comes
first, as an absolute path, then the crops, relative to the dataset folder, in
the order of the ``<image>`` placeholders in the human turn. It is built in a hidden staging folder beside it and
renamed into place only when complete, so a folder that exists is a whole
build; an interrupted build leaves nothing, and re-running it repeats no paid
annotator call (the annotator's cache lives outside the output).

Bad input never stops a build: a missing image, a box outside its image, an
object without a category, an annotator failure each skip what they touch and
are counted in the manifest under ``skipped``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from rap.data.annotator import Annotator, TemplateAnnotator
from rap.data.augment import (
    AugmentSettings,
    CropJob,
    CropResult,
    NovelView,
    clip_box,
    image_size,
    make_crops,
)
from rap.data.names import concept_tokens
from rap.data.sources import Scene, Source
from rap.data.tasks import TASKS, Concept, Placed, Sample, add_noise, scene_samples
from rap.errors import InvalidFormat, InvalidInput, RapError
from rap.formats import validated
from rap.generation import PromptConcept, user_turn
from rap.images import load_image
from rap.training.data import TrainingRecord

FORMAT = "rap-data/1"
MAX_WARNINGS = 50

A = TypeVar("A")
B = TypeVar("B")


class BuildConfig(BaseModel):
    """Everything that shapes a build; recorded in the manifest so a build can be repeated."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="seeds names, template choice, noise and augmentation")
    margin: float = Field(0.1, ge=0.0, le=1.0, description="crop margin, a share of the box size")
    names: Literal["random", "sks"] = Field("random", description="pronounceable names (<kima>) or <sks1>, <sks2>...")
    tasks: tuple[str, ...] = Field(TASKS, description="personalized tasks to make")
    max_concepts: int = Field(2, ge=1, description="most real concepts in a caption or description sample")
    noise_ratio: float = Field(0.5, ge=0.0, le=1.0, description="share of samples given noise concepts")
    noise_k: int = Field(2, ge=2, description="K: a noisy sample gets K-1 distractor concepts")
    augment: AugmentSettings = Field(default_factory=AugmentSettings, description="reference crop augmentation")
    general: Path | None = Field(None, description="LLaVA-Instruct JSON to mix in unchanged")
    general_fraction: float = Field(0.1, ge=0.0, le=1.0, description="share of the general records kept")
    workers: int = Field(0, ge=0, description="crop processes; 0 crops in this process")
    limit: int | None = Field(None, ge=1, description="most scenes read per source")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task {min(unknown)!r}; known: {', '.join(TASKS)}")
        return tasks


@dataclass
class BuildReport:
    """What a build made and skipped; written as ``manifest.json``."""

    output: Path
    config: BuildConfig
    tasks: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    annotator: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @property
    def samples(self) -> int:
        return sum(self.tasks.values())

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def skip(self, kind: str, message: str) -> None:
        """Count a problem once, however many samples it touches (a missing image is one problem)."""
        if (kind, message) in self._seen:
            return
        self._seen.add((kind, message))
        self.skipped[kind] += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{kind}: {message}")

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "samples": self.samples,
            "tasks": dict(sorted(self.tasks.items())),
            "sources": dict(sorted(self.sources.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "warnings": self.warnings,
            "annotator": self.annotator,
            "seconds": round(self.seconds, 3),
            "samples_per_second": round(self.samples_per_second, 2),
            "config": self.config.model_dump(mode="json"),
        }


def build_dataset(
    sources: Sequence[Source],
    output: str | os.PathLike[str],
    annotator: Annotator | None = None,
    config: BuildConfig | None = None,
    *,
    overwrite: bool = False,
    novel_view: NovelView | None = None,
) -> BuildReport:
    """Build a training set from ``sources`` into the folder ``output``, atomically.

    ``annotator`` defaults to the offline :class:`TemplateAnnotator`. An
    existing ``output`` is replaced only with ``overwrite``.
    """
    config = config or BuildConfig()
    annotator = annotator or TemplateAnnotator()
    output = Path(output)
    if output.exists() and not overwrite:
        raise InvalidInput(f"{output} exists; choose another folder or pass overwrite (--overwrite)")
    if not sources:
        raise InvalidInput("no sources to build from; name at least one (e.g. coco:annotations.json)")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "crops").mkdir(parents=True)
    report = BuildReport(output=output, config=config)
    started = time.perf_counter()
    try:
        _build(sources, staging, annotator, config, report, novel_view)
        if not report.samples:
            problems = ", ".join(f"{kind}: {n}" for kind, n in report.skipped.items()) or "no annotated objects"
            raise InvalidInput(f"no samples made ({problems}); check the sources and their images= folder")
        report.seconds = time.perf_counter() - started
        report.annotator = annotator.report()
        (staging / "manifest.json").write_text(json.dumps(report.manifest(), indent=2), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _build(
    sources: Sequence[Source],
    staging: Path,
    annotator: Annotator,
    config: BuildConfig,
    report: BuildReport,
    novel_view: NovelView | None,
) -> None:
    general = _general(config)  # a bad file fails before any crop is cut or annotator call paid for
    rng = random.Random(config.seed)
    scenes = [scene for source in sources for scene in _limited(source.scenes(config.seed), config.limit)]
    references: dict[str, CropJob] = {}
    categories: dict[str, str] = {}
    sentences: dict[str, tuple[str, ...]] = {}
    for scene in scenes:
        for obj in scene.objects:
            key = f"{scene.source}/{obj.identity}"
            if not obj.category:
                report.skip("empty_category", f"{scene.image}: object {obj.identity} has no category")
                continue
            if key not in references:
                stem = f"c{len(references):06d}"
                references[key] = CropJob(
                    obj.reference, obj.reference_box, staging / "crops", stem,
                    config.margin, config.seed + len(references), config.augment, novel_view,
                )
                categories[key], sentences[key] = obj.category, obj.sentences
    queries = sorted({scene.image for scene in scenes})
    with _pool(config.workers) as run:
        crops = dict(zip(references, run(make_crops, references.values())))
        sizes = dict(zip(queries, run(image_size, queries)))
    concepts = _describe(crops, categories, sentences, staging, annotator, config, report)
    pool = list(concepts.values())
    with (staging / "data.jsonl").open("w", encoding="utf-8") as out:
        for n, scene in enumerate(scenes):
            for sample in _samples(n, scene, sizes[scene.image], concepts, pool, config, rng, report):
                record = _record(sample, staging, annotator, report)
                if record is not None:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    report.tasks[sample.task] += 1
                    report.sources[sample.source] += 1
        for record in rng.sample(general, round(len(general) * config.general_fraction)):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            report.tasks["general"] += 1
            report.sources["general"] += 1


def _limited(scenes: Iterator[Scene], limit: int | None) -> Iterable[Scene]:
    return scenes if limit is None else (s for _, s in zip(range(limit), scenes))


class _pool:
    """``map`` over a process pool of ``workers``, or in this process when 0."""

    def __init__(self, workers: int) -> None:
        self.executor = ProcessPoolExecutor(workers) if workers > 0 else None

    def __enter__(self) -> Callable[[Callable[[A], B], Iterable[A]], list[B]]:
        if self.executor is None:
            return lambda fn, items: [fn(item) for item in items]
        return lambda fn, items: list(self.executor.map(fn, items, chunksize=8))

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


def _describe(
    crops: dict[str, CropResult],
    categories: dict[str, str],
    sentences: dict[str, tuple[str, ...]],
    staging: Path,
    annotator: Annotator,
    config: BuildConfig,
    report: BuildReport,
) -> dict[str, Concept]:
    """Name and describe every concept whose crop was made."""
    made = [key for key, result in crops.items() if result.files]
    for key, result in crops.items():
        if result.skip:
            report.skip(result.skip, result.message)
    concepts: dict[str, Concept] = {}
    for key, token in zip(made, concept_tokens(len(made), config.names, config.seed)):
        files = tuple(f"crops/{name}" for name in crops[key].files)
        image = _image(staging / files[0], annotator)
        try:
            info = annotator.describe(image, categories[key]).strip()
        except RapError as exc:
            report.skip("annotator_error", f"describing {key}: {exc.message}")
            continue
        if sentences[key]:
            info = f"{info} Described as: {sentences[key][0]}."
        concepts[key] = Concept(key, token, info, categories[key], files)
    return concepts


def _samples(
    n: int,
    scene: Scene,
    size: tuple[int, int] | str,
    concepts: dict[str, Concept],
    pool: Sequence[Concept],
    config: BuildConfig,
    rng: random.Random,
    report: BuildReport,
) -> list[Sample]:
    if isinstance(size, str):
        report.skip("missing_image", size)
        return []
    placed = []
    for obj in scene.objects:
        concept = concepts.get(f"{scene.source}/{obj.identity}")
        if concept is None:
            continue
        box = None if obj.box is None else clip_box(obj.box, size)
        if obj.box is not None and box is None:
            report.skip("empty_box", f"{scene.image}: box {obj.box} of {obj.identity} lies outside the image")
            continue
        placed.append(Placed(concept, box))
    samples = scene_samples(
        f"{scene.source}-{n}", scene.source, scene.image, size, placed, pool, config.tasks, config.max_concepts, rng
    )
    present = {p.concept.key for p in placed}
    return [
        add_noise(s, pool, present, config.noise_k - 1, rng) if rng.random() < config.noise_ratio else s
        for s in samples
    ]


_PLACEHOLDER = Image.new("RGB", (8, 8))


def _image(path: Path, annotator: Annotator) -> Image.Image:
    """The image, decoded only for an annotator that looks at it."""
    return load_image(path).image if annotator.needs_images else _PLACEHOLDER


def _record(sample: Sample, staging: Path, annotator: Annotator, report: BuildReport) -> dict[str, Any] | None:
    """One LLaVA-format conversation, with RAP-260K's ``extra`` field; None if the annotator failed."""
    answer = sample.answer
    if answer is None:
        try:
            about = [PromptConcept(c.token, c.info, _image(staging / c.crops[0], annotator)) for c in sample.about]
            answer = annotator.respond(sample.question, _image(sample.image, annotator), about).strip()
        except RapError as exc:
            report.skip("annotator_error", f"{sample.id}: {exc.message}")
            return None
    shown = [PromptConcept(s.concept.token, s.concept.info, _PLACEHOLDER) for s in sample.shown]
    human = user_turn(sample.question, _PLACEHOLDER, shown).text()
    return {
        "id": sample.id,
        "image": [str(sample.image.resolve())] + [s.crop for s in sample.shown],
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}],
        "extra": {s.crop: {"name": s.concept.token, "info": s.concept.info, "category": s.concept.category} for s in sample.shown},
        "meta": {"task": sample.task, "source": sample.source, "noise": sample.noise},
    }


def _general(config: BuildConfig) -> list[dict[str, Any]]:
    """The records of the LLaVA-Instruct file, checked; a seeded share is mixed in unchanged to keep general skills (paper 3.2)."""
    if config.general is None:
        return []
    try:
        records = json.loads(Path(config.general).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFormat(f"{config.general}: not readable LLaVA-Instruct JSON ({exc})") from None
    records = validated(_JsonList, records, f"{config.general}: LLaVA-Instruct JSON").root
    for number, record in enumerate(records, 1):
        validated(TrainingRecord, record, f"{config.general}: record {number}")
    return records


class _JsonList(RootModel[list[Any]]):
    """LLaVA-Instruct's layout: a JSON list, each item then checked as a :class:`TrainingRecord`."""

    model_config = ConfigDict(strict=True)

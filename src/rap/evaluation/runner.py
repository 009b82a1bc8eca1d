"""``rap eval``: run a benchmark against a store, a retriever and a backend, resumably.

One run builds a fresh store per repeat from the data set's concepts (timing
each add: the cost of personalization, Figure 6 of the paper), then evaluates
every item under each *variant*, writing each result as it finishes:

* retrieval: ``image`` (whole image only), ``regions`` (detector crops only),
  ``both``; at each database size N when distractors are given (Figure 5);
* recognition: ``retriever`` (calibrated distance, no generation) and, with a
  backend, ``model`` (the model's yes/no);
* caption and qa: ``rap`` (retrieval as configured), and the baselines
  ``whole-image`` (no detector) and ``no-retrieval`` (no concepts injected).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rap.answers import parse_choice
from rap.assistant import Assistant
from rap.generation import GenerationOptions, Generator
from rap.encoders.memo import RememberingEncoder, RememberingFaceAnalyzer
from rap.errors import InvalidInput
from rap.evaluation.items import EvalItem, EvalSet, Task
from rap.evaluation.journal import Journal
from rap.evaluation.metrics import QAResult
from rap.retrieval import Retriever
from rap.settings import Settings
from rap.store.inputs import NewConcept, ProgressFactory
from rap.store.local import LocalConceptStore


@dataclass
class EvalConfig:
    task: Task
    out: Path
    settings: Settings
    repeats: int = 1
    seed: int | None = None
    ks: tuple[int, ...] = (1, 2, 5)
    baselines: bool = True
    recognition_modes: tuple[str, ...] = ("retriever",)
    distractors: list[NewConcept] = field(default_factory=list)
    sizes: tuple[int, ...] = ()


@dataclass
class RepeatOutcome:
    add_seconds: list[float]
    concepts: list[str]


def _variants(config: EvalConfig) -> list[str]:
    if config.task == "retrieval":
        modes = ["image", "regions", "both"]
        sizes = config.sizes or (0,)
        return [f"{mode}@{n}" if config.sizes else mode for n in sizes for mode in modes]
    if config.task == "recognition":
        return list(config.recognition_modes)
    return ["rap", "whole-image", "no-retrieval"] if config.baselines else ["rap"]


def _order(config: EvalConfig, items: list[EvalItem]) -> list[tuple[str, EvalItem]]:
    """Every (variant, item) pair. Retrieval asks each photo its three ways in a row
    (per store size), so that its crops, remembered by the encoder, are embedded once."""
    variants = _variants(config)
    if config.task != "retrieval":
        return [(v, item) for v in variants for item in items]
    by_size: dict[str, list[str]] = {}
    for variant in variants:
        by_size.setdefault(variant.partition("@")[2], []).append(variant)
    return [(v, item) for size in by_size.values() for item in items for v in size]


def run(
    config: EvalConfig,
    read: Callable[[int], EvalSet],  # repeat number -> the data, with that repeat's references
    progress: ProgressFactory,
) -> tuple[Journal, list[RepeatOutcome]]:
    """Evaluate every item of every repeat under every variant; skip what the journal holds."""
    config.out.mkdir(parents=True, exist_ok=True)
    journal = Journal(config.out / "items.jsonl")
    outcomes = []
    try:
        for repeat in range(config.repeats):
            eval_set = read(repeat)
            missing = eval_set.missing_files()
            if missing:
                shown = ", ".join(str(p) for p in missing[:3])
                raise InvalidInput(f"{len(missing)} image(s) are missing, e.g. {shown}; fix the paths or pass --images-root")
            with LocalConceptStore(config.out / "stores" / f"r{repeat}", encoder=config.settings.encoder, faces=config.settings.faces, settings=config.settings) as store:
                outcome = _remember(store, eval_set, config.out / "stores" / f"r{repeat}-add-seconds.json")
                outcomes.append(outcome)
                todo = [(v, item) for v, item in _order(config, eval_set.items) if not journal.done(repeat, v, item.id)]
                with progress(f"repeat {repeat + 1}/{config.repeats}", len(todo)) as advance:
                    for variant, item, result in _evaluate(config, store, todo):
                        journal.record(repeat, variant, item.id, result)
                        advance(1)
    finally:
        journal.close()
    return journal, outcomes


def _remember(store: LocalConceptStore, eval_set: EvalSet, timings: Path) -> RepeatOutcome:
    """Add the concepts one by one, timing each add (the model is loaded first, untimed).

    The timings are kept beside the store, so a resumed run still reports them.
    """
    store.embedder.encoder  # noqa: B018 - loading is a one-off cost, not the cost of an add
    seconds = json.loads(timings.read_text()) if timings.exists() else []
    for concept in eval_set.concepts.values():
        if concept.name in store:
            continue
        start = time.perf_counter()
        store.add(concept.name, list(concept.images), info=concept.info, category=concept.category)
        seconds.append(time.perf_counter() - start)
    timings.write_text(json.dumps(seconds))
    return RepeatOutcome(seconds, list(eval_set.concepts))


class _Assistants:
    """Assistants for each variant, sharing one loaded generation backend."""

    def __init__(self, settings: Settings, store: LocalConceptStore) -> None:
        self.settings, self.store = settings, store
        self._generator: Generator | str = settings.generator_spec
        self._made: dict[tuple[Any, ...], Assistant] = {}

    def make(self, detector: str, *, whole_image: bool = True, max_concepts: int | None = None, k: int | None = None, strict: bool | None = None) -> Assistant:
        """One assistant per configuration, kept: its retriever remembers the last photos' regions."""
        key = (detector, whole_image, max_concepts, k, strict)
        if key in self._made:
            made = self._made[key]
            if isinstance(self._generator, Generator):
                made.generator = self._generator
            return made
        s = self.settings
        retriever = Retriever.from_settings(
            self.store, s, detector=detector, top_k=k, strict=strict, whole_image=whole_image
        )
        options = GenerationOptions(max_new_tokens=s.max_new_tokens, temperature=s.temperature)
        made = self._made[key] = Assistant(self.store, retriever, self._generator, options, s.generator_options, max_concepts)
        return made

    def keep(self, assistant: Assistant) -> None:
        """Remember the backend the assistant loaded, for the next variants."""
        if not isinstance(self._generator, Generator) and assistant.loaded_generator is not None:
            self._generator = assistant.loaded_generator


def _evaluate(config: EvalConfig, store: LocalConceptStore, todo: list[tuple[str, EvalItem]]) -> Iterator[tuple[str, EvalItem, dict[str, Any]]]:
    detector = config.settings.detector
    if config.task == "retrieval":  # its three ways of asking a photo repeat the same crops and faces
        store.embedder.encoder = RememberingEncoder(store.embedder.encoder)
        if store.embedder.face_analyzer is not None:
            store.embedder.face_analyzer = RememberingFaceAnalyzer(store.embedder.face_analyzer)
    assistants = _Assistants(config.settings, store)
    for variant, item in todo:
        base, _, size = variant.partition("@")
        if size:
            _resize(store, config.distractors, int(size))
        if config.task == "retrieval":
            # the default decision: the top K, each labelled (recall from their order, acceptance from the labels)
            bot = assistants.make("none" if base == "image" else detector, whole_image=base != "regions", k=max(config.ks), strict=False)
            retrieval = bot.retriever.retrieve(item.image)
            yield variant, item, {
                "retrieved": retrieval.names(), "matched": retrieval.matches(), "truth": list(item.concepts), "n": len(store),
                "operating_point": bot.retriever.operating_point.describe(),
            }  # fmt: skip
            continue
        if config.task == "recognition":
            bot = assistants.make(detector)
            result = bot.recognize(item.image, item.target or "", mode=base)  # type: ignore[arg-type]
            assistants.keep(bot)
            yield variant, item, {
                "target": item.target, "truth": item.answer, "present": result.present, "reply": result.reply,
                "right": result.present is not None and result.present == bool(item.answer),
                "distance": result.match.distance, "score": result.match.score,
            }  # fmt: skip
            continue
        bot = assistants.make("none" if variant == "whole-image" else detector, max_concepts=0 if variant == "no-retrieval" else None)
        answer = bot.caption(item.image) if config.task == "caption" else bot.ask(_qa_prompt(item), item.image)
        assistants.keep(bot)
        yield variant, item, {
            "reply": answer.text, "truth": list(item.concepts) if config.task == "caption" else item.answer,
            "options": item.options, "qa_kind": "visual" if item.image else "text", "target": item.target,
            "used": [c.to_dict() for c in answer.concepts],
        } | (_audit_choice(answer.text, item) if config.task == "qa" else {})  # fmt: skip


def _audit_choice(reply: str, item: EvalItem) -> dict[str, Any]:
    """The option the reply was read as choosing and whether it is the right one, read as the score reads it."""
    result = QAResult(item.id, "visual" if item.image else "text", parse_choice(reply, item.options or {}), str(item.answer))
    return {"choice": result.predicted, "right": result.right}


def _qa_prompt(item: EvalItem) -> str:
    options = "\n".join(f"{letter}. {text}" for letter, text in (item.options or {}).items())
    return f"{item.question}\n{options}\nAnswer with the option's letter from the given choices directly."


def _resize(store: LocalConceptStore, distractors: list[NewConcept], size: int) -> None:
    """Add or remove distractors so the store holds ``size`` concepts (as far as there are distractors).

    The first distractors are always the ones kept, so every size sees the same
    database whatever order a resumed run reaches it in.
    """
    names = {d.name for d in distractors}
    present = [c.name for c in store.list()]
    base = sum(1 for name in present if name not in names)
    wanted = distractors[: max(0, size - base)]
    keep = {d.name for d in wanted}
    for name in present:
        if name in names and name not in keep:
            store.remove(name)
    missing = [d for d in wanted if d.name not in present]
    if missing:
        store.add_many(missing)

"""``rap demo``: the whole Remember -> Retrieve -> Generate loop on bundled photos, offline.

It remembers three concepts from one photo each, then retrieves them from
*other* photos of the same subjects, shows that a photo of something never
remembered retrieves nothing, asks a visual question, a text-only question and
for a caption, and then edits a concept to show the next answer reflect the
change at once (the paper's Table 11). With the offline profile the answers
come from SmolLM2-135M, a weak text-only model: the retrieval is the point.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from rap.assistant import Answer, Assistant
from rap.sample_photos import FOLDER as PHOTOS
from rap.render import concept_rows, retrieval_table
from rap.settings import Settings
from rap.store.local import LocalConceptStore

CONCEPTS = [
    ("bo", "dog_00.jpg", "dog", "<bo> is a corgi with a ginger and white coat who always sticks out his tongue."),
    ("kit", "cat_00.jpg", "cat", "<kit> is a ginger tabby cat who naps under the garden bushes."),
    ("tea", "teapot_00.jpg", "teapot", "<tea> is a small purple clay teapot from a trip to Yixing."),
]
QUERIES = ["dog_01.jpg", "cat_01.jpg", "teapot_01.jpg", "clock_00.jpg"]


def run(store_path: Path, console: Console, settings: Settings) -> None:
    console.rule("[bold]Remember")
    with LocalConceptStore(store_path, encoder=settings.encoder, faces=settings.faces, settings=settings) as store:
        for name, photo, category, info in CONCEPTS:
            concept = store.add(name, [PHOTOS / photo], info=info, category=category)
            console.print(f"remembered {concept.token} ({category}) from {photo}: {info}")
        # Short answers keep the demo quick on a CPU.
        assistant = Assistant.from_settings(settings.model_copy(update={"max_new_tokens": min(settings.max_new_tokens, 48)}), store)
        retriever = assistant.retriever

        console.rule("[bold]Retrieve from photos the store has never seen")
        for photo, retrieval in zip(QUERIES, retriever.retrieve_batch([PHOTOS / q for q in QUERIES])):
            console.print(retrieval_table(photo, retrieval))

        def show(title: str, answer: Answer) -> None:
            console.print(f"[bold]{title}[/bold]\n{answer.text}")
            console.print(concept_rows(answer.concepts))

        console.rule(f"[bold]Generate with {settings.generator_spec}")
        show("dog_01.jpg: What is the dog doing?", assistant.ask("What is the dog doing?", PHOTOS / "dog_01.jpg"))
        show("Text only: What does <kit> like to do?", assistant.ask("What does <kit> like to do?"))
        show("Caption of teapot_01.jpg", assistant.caption(PHOTOS / "teapot_01.jpg"))

        console.rule("[bold]Edit a concept: the next answer reflects it")
        question = "Where is <tea> from?"
        show(f"Before: {question}", assistant.ask(question))
        store.edit("tea", info="<tea> is a small purple clay teapot, a present from my grandmother in Lisbon.")
        console.print("edited the description of <tea>")
        show(f"After: {question}", assistant.ask(question))

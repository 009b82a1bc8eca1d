"""``rap demo``: the whole Remember -> Retrieve loop on bundled photos, offline.

It remembers three concepts from one photo each, then retrieves them from
*other* photos of the same subjects, shows that a photo of something never
remembered retrieves nothing, answers a text-only mention, and edits a concept
to show the next retrieval reflect the change at once (the paper's Table 11).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from rap.retrieval import Retriever
from rap.store.local import LocalConceptStore

PHOTOS = Path(__file__).parent / "photos"

CONCEPTS = [
    ("bo", "dog_00.jpg", "dog", "<bo> is a corgi with a ginger and white coat who always sticks out his tongue."),
    ("kit", "cat_00.jpg", "cat", "<kit> is a ginger tabby cat who naps under the garden bushes."),
    ("tea", "teapot_00.jpg", "teapot", "<tea> is a small purple clay teapot from a trip to Yixing."),
]
QUERIES = ["dog_01.jpg", "cat_01.jpg", "teapot_01.jpg", "clock_00.jpg"]


def run(store_path: Path, console: Console, *, encoder: str, detector: str, faces: str) -> None:
    from rap.cli.render import retrieval_table

    console.rule("[bold]Remember")
    with LocalConceptStore(store_path, encoder=encoder, faces=faces) as store:
        for name, photo, category, info in CONCEPTS:
            concept = store.add(name, [PHOTOS / photo], info=info, category=category)
            console.print(f"remembered {concept.token} ({category}) from {photo}: {info}")
        retriever = Retriever(store, detector, top_k=2)

        console.rule("[bold]Retrieve from photos the store has never seen")
        for photo, retrieval in zip(QUERIES, retriever.retrieve_batch([PHOTOS / q for q in QUERIES])):
            console.print(retrieval_table(photo, retrieval))

        console.rule("[bold]A text-only question")
        question = "What does <kit> like to do?"
        console.print(retrieval_table(question, retriever.retrieve(text=question)))

        console.rule("[bold]Edit a concept: the next retrieval reflects it")
        store.edit("tea", rename="grandmas-teapot", info="<grandmas-teapot> was my grandmother's.")
        console.print("renamed <tea> to <grandmas-teapot>")
        console.print(retrieval_table("teapot_01.jpg", retriever.retrieve(PHOTOS / "teapot_01.jpg")))

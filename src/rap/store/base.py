"""The interface every concept store implements.

The embedded store (:class:`rap.store.local.LocalConceptStore`: SQLite + FAISS in
one folder) is the default; a shared store (:class:`rap.store.postgres.PostgresConceptStore`:
PostgreSQL + pgvector) implements the same methods. :mod:`rap.store.registry` opens
either by name. Everything above the store (retriever, assistant, CLI, service) uses
only this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from rap.concepts import DEFAULT_CATEGORY, PERSON_CATEGORIES, Concept, ConceptImage, name_key
from rap.embedding import Embedder, SpaceVector
from rap.encoders import Face, FaceAnalyzer, ImageEncoder
from rap.errors import ConceptNotFound, EncoderMismatch
from rap.settings import Settings
from rap.store.inputs import ImageSource, NewConcept, Progress, ProgressFactory
from rap.store.prepare import EditPlan, Prepared, embed, plan_edit, prepare


MODEL_DIGEST = "model_digest:image"
"""What the store records (:meth:`ConceptStore.record`) the digest of its image vectors' model file under."""


@dataclass(frozen=True)
class VectorHit:
    """One nearest reference image for a query vector."""

    concept: str
    image_id: int
    distance: float


class ConceptStore(ABC):
    """Concepts and their vectors; every change is visible to the next search."""

    #: the models that make the store's vectors: image encoder and face analyzer
    embedder: Embedder
    #: reference images are decoded reduced to this shorter side to be embedded
    image_side: int
    #: reference images decoded and embedded at once
    batch_images: int

    @property
    def encoder_id(self) -> str:
        """Canonical spec of the image encoder whose vectors the store holds."""
        return self.embedder.encoder_id

    @property
    def faces_id(self) -> str:
        """Canonical spec of the face analyzer, or ``none``."""
        return self.embedder.faces_id

    #: whether opening re-embedded the store for the encoder asked for
    reembedded_on_open: bool = False

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store is, for people: a folder, or a database URL (without its password) and user."""

    @abstractmethod
    def index_info(self) -> dict[str, dict[str, object]]:
        """For each space holding vectors: their count, dimension, and how they are searched."""

    def reembed(self, progress: Progress | None = None, image_ids: Iterable[int] | None = None) -> None:
        """Recompute vectors with the current encoder and face analyzer, in one transaction.

        Every image's, or only those of ``image_ids`` (``rap check --repair`` re-keys
        images whose vectors were damaged or lost; those join the vectors there are,
        so the model file must be the recorded one).
        """
        with self._exclusive():
            only = None if image_ids is None else set(image_ids)
            if only is not None:
                self._check_model_file()
            rows = [row for row in self._image_categories() if only is None or row[0] in only]
            keyed: list[tuple[int, list[SpaceVector]]] = []
            for start in range(0, len(rows), self.batch_images):
                chunk = rows[start : start + self.batch_images]
                images = self._reference_images([image_id for image_id, _ in chunk])
                people = [category in PERSON_CATEGORIES for _, category in chunk]
                keyed += zip([image_id for image_id, _ in chunk], self.embedder.reference_vectors(images, people))
                if progress:
                    progress(len(chunk))
            self._write_vectors(keyed, every=only is None)
            if only is None:
                self._record_model_file()
            self._after_write()

    def _exclusive(self) -> AbstractContextManager[object]:
        """Held from reading what to embed until it is written (:meth:`add_many`, :meth:`reembed`).

        Nothing by default: the write re-checks what it depends on in its own transaction.
        """
        return nullcontext()

    def _after_write(self) -> None:
        """Bring what is derived from the stored rows (an index) up to date after a committed write."""

    @abstractmethod
    def _image_categories(self) -> list[tuple[int, str]]:
        """Every stored image's row id and its concept's category, by row id."""

    @abstractmethod
    def _reference_images(self, image_ids: Sequence[int]) -> list[Image.Image]:
        """The stored images of these row ids, in that order, decoded reduced to :attr:`image_side`."""

    @abstractmethod
    def _write_vectors(self, keyed: Sequence[tuple[int, list[SpaceVector]]], every: bool) -> None:
        """In one transaction, replace the vectors of each image in ``keyed`` (image row id, its new vectors);
        with ``every``, those are all the images: every old vector goes and the current models are recorded."""

    @abstractmethod
    def _count_images(self) -> int: ...

    @abstractmethod
    def _reembed_command(self, encoder: str, faces: str) -> str:
        """The command line that re-embeds this store with these models, runnable as printed."""

    def _choose_models(
        self,
        recorded: tuple[str | None, str | None],
        encoder: str | ImageEncoder | None,
        faces: str | FaceAnalyzer | None,
        defaults: tuple[str, str],
        on_change: Literal["refuse", "reembed"],
        progress: ProgressFactory | None,
        record: Callable[[tuple[str, str]], None],
        settings: Settings | None = None,
    ) -> Embedder:
        """The models that key this store: those asked for, else the ones it ``recorded``, else ``defaults``;
        those named by spec are built with ``settings``.

        A new store ``record``s its choice. Models other than the recorded ones
        are refused while vectors exist (vectors of two encoders are never
        mixed), or re-embed every vector with ``on_change="reembed"``.
        """
        chosen = Embedder(encoder or recorded[0] or defaults[0], faces or recorded[1] or defaults[1], settings)
        wanted = (chosen.encoder_id, chosen.faces_id)
        if recorded == (None, None):
            chosen.load()  # a new store's models must load before it is recorded
            record(wanted)
        elif recorded != wanted:
            if on_change == "refuse" and len(self):
                raise EncoderMismatch(
                    f"{self.location} holds vectors of encoder {recorded[0]} (faces: {recorded[1]}), not "
                    f"{wanted[0]} (faces: {wanted[1]}); use --encoder {recorded[0]}, or re-embed with "
                    f"'{self._reembed_command(*wanted)}'"
                )
            self.embedder = chosen
            self.reembedded_on_open = True
            if progress is None:
                self.reembed()
            else:
                with progress("re-embedding", self._count_images()) as advance:
                    self.reembed(advance)
        return chosen

    def _check_model_file(self) -> None:
        """Refuse to add vectors made by another model file than the store's vectors were.

        Two processes may load the same encoder id from different files (a
        quantization made on another machine or by another version): their vectors
        would not be comparable, and nothing else would notice. The first process
        to add vectors records its file's digest; one whose file differs may read
        and search, but adding waits for ``rap reembed``, which makes every vector
        again with its file and records that. So does adding to a store whose
        vectors predate the record (the int8 model's recipe changed since).
        """
        digest = self.embedder.encoder.model_digest
        if digest is None:
            return
        recorded = self.recorded(MODEL_DIGEST)
        if recorded is None and len(self):
            raise EncoderMismatch(
                f"{self.location}: its vectors were made before rap recorded model files, perhaps by an "
                f"earlier quantization of {self.encoder_id}; searching works, but to add, re-embed with "
                f"'{self._reembed_command(self.encoder_id, self.faces_id)}'"
            )
        if recorded is None:
            self.record(MODEL_DIGEST, digest)
        elif recorded != digest:
            raise EncoderMismatch(
                f"{self.location}: its vectors were made by another model file of {self.encoder_id} "
                f"(sha256 {recorded[:12]}) than this process loads (sha256 {digest[:12]}); searching works, "
                f"but to add, re-embed with '{self._reembed_command(self.encoder_id, self.faces_id)}'"
            )

    def _record_model_file(self) -> None:
        """After every vector was made again: the model file they all come from now."""
        self.record(MODEL_DIGEST, self.embedder.encoder.model_digest)

    def add(
        self,
        name: str,
        images: Sequence[ImageSource],
        *,
        info: str = "",
        category: str = DEFAULT_CATEGORY,
        attributes: Mapping[str, str] | None = None,
    ) -> Concept:
        """Remember one concept (see :meth:`add_many`)."""
        return self.add_many([NewConcept(name, images, info, category, attributes or {})])[0]

    def add_many(self, concepts: Sequence[NewConcept], progress: Progress | None = None) -> list[Concept]:
        """Add several concepts at once, with batched encoding; all or nothing."""
        with self._exclusive():
            self._check_model_file()
            taken = self._name_keys()
            prepared = [prepare(new, taken) for new in concepts]
            embed(self.embedder, prepared, progress, image_side=self.image_side, batch_images=self.batch_images)
            self._insert_concepts(prepared)
            self._after_write()
            return self.lookup([p.name for p in prepared])

    @abstractmethod
    def _name_keys(self) -> set[str]:
        """The name keys of the stored concepts."""

    @abstractmethod
    def _insert_concepts(self, prepared: Sequence[Prepared]) -> None:
        """Write checked, embedded new concepts in one transaction; a name taken meanwhile is :class:`ConceptExists`."""

    def edit(
        self,
        name: str,
        *,
        rename: str | None = None,
        info: str | None = None,
        category: str | None = None,
        set_attributes: Mapping[str, str] | None = None,
        unset_attributes: Iterable[str] = (),
        add_images: Sequence[ImageSource] = (),
        remove_images: Iterable[int] = (),
    ) -> Concept:
        """Change a concept; the whole edit is checked and its new images embedded before
        anything is written, then written in one transaction."""
        self._check_model_file()
        current = self.get(name)
        plan = plan_edit(
            self.embedder,
            current,
            lambda other: bool(self.lookup([other])),
            rename=rename,
            info=info,
            category=category,
            set_attributes=set_attributes,
            unset_attributes=unset_attributes,
            add_images=add_images,
            remove_images=remove_images,
            image_side=self.image_side,
            batch_images=self.batch_images,
        )
        person = plan.changed.category in PERSON_CATEGORIES
        return self._write_edit(current, plan, self._face_vectors(plan.kept) if plan.refresh_faces and person else {})

    @abstractmethod
    def _write_edit(self, current: Concept, plan: EditPlan, faces: Mapping[int, Face]) -> Concept:
        """Write a checked edit of ``current`` in one transaction (``faces``: the kept images'
        new face vectors, when the edit made the concept a person); the concept as it now is."""

    def _face_vectors(self, images: Sequence[ConceptImage]) -> dict[int, Face]:
        """The largest face in each of ``images`` (stored ones), keyed by the image's row id."""
        analyzer = self.embedder.face_analyzer
        if analyzer is None or not images:
            return {}
        row_ids = self._row_ids(images)
        found = {}
        for image_id, picture in zip(row_ids, self._reference_images(row_ids)):
            faces = analyzer.faces(picture)
            if faces:
                found[image_id] = faces[0]
        return found

    @abstractmethod
    def _row_ids(self, images: Sequence[ConceptImage]) -> list[int]:
        """The row ids of these stored images, in that order (a :class:`ConceptImage`'s ``id`` is what users see)."""

    @abstractmethod
    def remove(self, name: str) -> None: ...

    def get(self, name: str) -> Concept:
        """The concept, by name (case-insensitive, with or without ``<>``)."""
        found = self.lookup([name])
        if not found:
            raise ConceptNotFound(f"no concept named {name.strip().strip('<>')!r}; 'rap concept list' shows them")
        return found[0]

    def lookup(self, names: Iterable[str]) -> list[Concept]:
        """The concepts among ``names`` that exist, in the order given; unknown ones are skipped."""
        keys = list(dict.fromkeys(name_key(name.strip().strip("<>")) for name in names))
        found = {name_key(concept.name): concept for concept in self._find(keys)} if keys else {}
        return [found[key] for key in keys if key in found]

    def _concept_id(self, name: str) -> tuple[int, str]:
        """The row id and stored name of the concept called ``name`` (case-insensitive, with or without ``<>``)."""
        cleaned = name.strip()
        if cleaned.startswith("<") and cleaned.endswith(">"):
            cleaned = cleaned[1:-1]
        row = self._id_of(name_key(cleaned))
        if row is None:
            raise ConceptNotFound(f"no concept named {cleaned!r}; 'rap concept list' shows them")
        return row

    @abstractmethod
    def _id_of(self, key: str) -> tuple[int, str] | None:
        """The row id and stored name of the concept whose name key is ``key``, or None."""

    @abstractmethod
    def _find(self, keys: Sequence[str]) -> list[Concept]:
        """The stored concepts whose name keys are among ``keys`` (distinct, not empty), in any order."""

    @abstractmethod
    def list(self) -> list[Concept]: ...

    @abstractmethod
    def categories(self) -> list[str]:
        """The distinct categories of the stored concepts: the detector's classes."""

    @abstractmethod
    def spaces(self) -> list[str]:
        """The vector spaces that hold at least one vector (``image``, ``face``)."""

    @abstractmethod
    def search(self, space: str, queries: np.ndarray, k: int) -> list[list[VectorHit]]:
        """The ``k`` nearest reference images of each query vector, nearest first."""

    def concept_vectors(self, name: str, space: str) -> np.ndarray:
        """The vectors of one concept's reference images in ``space`` (rows; possibly none)."""
        vectors = self._vectors_of(self._concept_id(name)[0], space)
        return np.stack(vectors) if vectors else np.empty((0, self._dim(space)), np.float32)

    @abstractmethod
    def _vectors_of(self, concept_id: int, space: str) -> list[np.ndarray]:
        """The vectors in ``space`` of the concept with this row id, by vector row id."""

    @abstractmethod
    def _dim(self, space: str) -> int:
        """The dimension of ``space``'s vectors; 0 while it holds none."""

    @abstractmethod
    def image_path(self, image_file: str) -> Path:
        """Where a stored reference image can be read."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def recorded(self, key: str) -> str | None:
        """A value recorded in the store for its owner with :meth:`record`, or None.

        Facts that belong to the vectors rather than to one process (the
        operating point calibrated on the owner's photos, the digest of the model
        file that made the vectors) live here, so every command and every server
        worker that opens the store uses the same ones.
        """

    @abstractmethod
    def record(self, key: str, value: str | None) -> None:
        """Record ``value`` under ``key`` (None forgets it), in one write that other processes see."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.lookup([name]))

    def close(self) -> None:
        """Release files and connections."""

    def __enter__(self) -> ConceptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""What one worker holds: the settings, the models loaded once, each user's store, the limits.

Models (image encoder, face analyzer, detector, generator) are loaded once per
worker and shared by every user; each user has a store of their own, opened on
their first request through :func:`open_user_store` and kept among the
``open_stores`` most recently used.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import LRUCache

from rap.assistant import Assistant
from rap.detectors import RegionDetector, create_detector
from rap.embedding import Embedder
from rap.errors import RapError
from rap.generation import Generator, create_generator
from rap.retrieval import Retriever
from rap.server.limits import GenerationQueue, RateLimiter
from rap.server.metrics import Metrics
from rap.server.photo_jobs import PhotoJobs
from rap.server.uploads import PixelBudget
from rap.server.users import LOCAL_USER, User, open_users
from rap.settings import Settings
from rap.store.base import ConceptStore
from rap.store.registry import open_store

LOCAL = User(0, LOCAL_USER, "")


class SharedModels:
    """The models every user's store and assistant share, loaded once on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder = Embedder(settings.encoder, settings.faces, settings)
        self._lock = threading.Lock()
        self._detector: RegionDetector | None = None
        self._generator: Generator | None = None

    @property
    def detector(self) -> RegionDetector:
        with self._lock:
            if self._detector is None:
                self._detector = create_detector(self.settings.detector)
            return self._detector

    @property
    def generator(self) -> Generator:
        with self._lock:
            if self._generator is None:
                self._generator = create_generator(self.settings.generator_spec, **self.settings.generator_options)
            return self._generator

    def store_models(self) -> dict[str, Any]:
        """The loaded encoder and face analyzer, as a store's constructor takes them."""
        with self._lock:
            return {"encoder": self.embedder.encoder, "faces": self.embedder.face_analyzer or "none"}

    def load(self) -> None:
        """Load everything now (at start-up), so the first user does not wait for it."""
        self.store_models()
        _ = self.detector, self.generator


def open_user_store(settings: Settings, user: User, models: SharedModels) -> ConceptStore:
    """The concept store of one user, and only theirs, through the store registry.

    With a shared store (``store_url``, e.g. PostgreSQL) it is that database
    bound to the user's id: every query is filtered by it. Otherwise each user
    has an embedded store in a folder named by their id (never by their name)
    under ``$RAP_HOME/server/users``. The ``--no-auth`` local user has the
    command line's own store either way.
    """
    if user.id == LOCAL.id:
        return open_store(settings, create=True, **models.store_models())
    if not settings.store_url:
        settings = settings.model_copy(update={"store_url": f"local:{settings.server_path}"})
    return open_store(settings, user=str(user.id), create=True, **models.store_models())


class TimedRetriever(Retriever):
    """A retriever that records how long each retrieval takes in the service's metrics."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        with self._metrics.retrieval.time():
            return super().retrieve(*args, **kwargs)

    def locate(self, *args: Any, **kwargs: Any) -> Any:
        with self._metrics.retrieval.time():
            return super().locate(*args, **kwargs)


class Runtime:
    """Everything one worker shares between requests."""

    def __init__(self, settings: Settings, *, auth: bool = True) -> None:
        self.settings = settings
        self.auth = auth
        self.metrics = Metrics()
        self.models = SharedModels(settings)
        self.users = open_users(settings) if auth else None
        self.limiter = RateLimiter(f"{settings.rate_limit}/minute", "too many requests")
        self.signins = RateLimiter(settings.failed_signins, "too many wrong API keys from this address")
        self.pixels = PixelBudget(settings.max_decoding_pixels)
        self.queue = GenerationQueue(settings.generation_slots, settings.generation_queue, settings.retry_after, self.metrics)
        self.ready = threading.Event()
        #: why loading the models failed, if it did (``/readyz`` says so)
        self.load_error: str | None = None
        #: indexing of uploaded photos, in this process (embedded store)
        self.photo_jobs = PhotoJobs(settings, self.store, lambda: self.models.detector, self.metrics.photo_queue)
        self._stores: LRUCache[int, ConceptStore] = LRUCache(maxsize=settings.open_stores)
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the models; a failure is kept for ``/readyz`` (requests then report it themselves)."""
        try:
            self.models.load()
        except RapError as exc:
            self.load_error = exc.message
            return
        self.ready.set()

    def store(self, user: User) -> ConceptStore:
        """The user's store, opened on first use; the least recently used beyond ``open_stores`` is dropped
        (not closed: a request may still hold it; it closes when the last one lets go)."""
        with self._lock:
            store = self._stores.get(user.id)
            if store is None:
                store = open_user_store(self.settings, user, self.models)
                self._stores[user.id] = store
            return store

    def assistant(self, user: User, k: int | None = None) -> Assistant:
        settings = self.settings if k is None else self.settings.model_copy(update={"top_k": k})
        store = self.store(user)
        retriever = TimedRetriever.from_settings(store, settings, detector=self.models.detector, metrics=self.metrics)
        return Assistant.from_settings(
            settings, store, detector=self.models.detector, generator=self.models.generator, retriever=retriever
        )

    def close(self) -> None:
        self.photo_jobs.close()
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
        if self.users is not None:
            self.users.close()

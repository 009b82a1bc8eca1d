"""Each API user's photo library on the embedded store, and its indexing in the background.

An upload is kept as ``library/<sha256>.<ext>`` in the user's store folder
(named by content, so the same photo sent twice is one photo, and its id is
that hash), then the user is queued for indexing. One thread of the serving
process takes users off the queue and runs the command line's own incremental
:func:`~rap.photos.index_photos` over their ``library/`` folder: everything
uploaded since is indexed, each photo committed with its regions at once, and
a photo left unindexed by a restart is taken up by the next upload's run. A
file that cannot be indexed is removed and its reason kept (in memory) for
its state. Several uploads while a run is going make one more run, not many.

The PostgreSQL library (and its task queue) is not built yet: every photos
route answers 501 there (:func:`library_folder`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Gauge

from rap.detectors import RegionDetector
from rap.errors import RapError
from rap.photos import PhotoLibrary, index_photos
from rap.retrieval import Retriever
from rap.server.users import User
from rap.settings import Settings
from rap.store.base import ConceptStore
from rap.store.local import LocalConceptStore

log = logging.getLogger(__name__)

LIBRARY = "library"
"""The folder of a user's uploaded photos, inside their store folder."""


class NotSupported(RapError):
    """A feature the configured store does not have yet."""

    http_status = 501


def library_folder(store: ConceptStore) -> Path:
    """Where a user's uploaded photos are kept; 501 on a store without a photo library."""
    if not isinstance(store, LocalConceptStore):
        raise NotSupported("the photo library needs the embedded store (local:PATH) for now; this service runs on PostgreSQL")
    return store.path / LIBRARY


class PhotoJobs:
    """The queue of users whose library has photos to index, and the one thread that indexes them."""

    def __init__(
        self, settings: Settings, store: Callable[[User], ConceptStore], detector: Callable[[], RegionDetector], gauge: Gauge
    ) -> None:
        self._settings = settings
        #: libraries queued or being indexed, for /metrics
        self._gauge = gauge
        self._store = store
        self._detector = detector
        self._pending: dict[int, User] = {}
        self._running: int | None = None
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        #: why an uploaded photo could not be indexed, by (user id, photo id)
        self.failed: dict[tuple[int, str], str] = {}
        self._locks: dict[int, threading.Lock] = {}

    @contextmanager
    def library(self, user: User) -> Iterator[PhotoLibrary]:
        """The user's library, opened for one request, one request of that user at a time (``find``
        rebuilds and saves the library's vector index files when the photos changed)."""
        store = self._store(user)
        library_folder(store)
        with self._changed:
            lock = self._locks.setdefault(user.id, threading.Lock())
        with lock, PhotoLibrary(store.path) as library:
            yield library

    def retriever(self, user: User) -> Retriever:
        store = self._store(user)
        return Retriever.from_settings(store, self._settings, detector=self._detector())

    def queue(self, user: User) -> None:
        """Index the user's ``library/`` folder soon (once, however often this is called meanwhile)."""
        with self._changed:
            if self._stopped:
                return
            self._pending[user.id] = user
            self._count()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="rap-photo-index", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def _count(self) -> None:
        self._gauge.set(len(self._pending) + (self._running is not None))

    def busy(self, user: User) -> bool:
        """Whether the user's library has a run queued or going."""
        with self._changed:
            return user.id in self._pending or self._running == user.id

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopped:
                    self._changed.wait()
                if self._stopped:
                    return
                user_id, user = next(iter(self._pending.items()))
                del self._pending[user_id]
                self._running = user_id
            try:
                self._index(user)
            except Exception:  # a failed run must not end the thread: the next upload runs it again
                log.exception("indexing the photo library of user %s failed", user.id)
            finally:
                with self._changed:
                    self._running = None
                    self._count()
                    self._changed.notify_all()

    def _index(self, user: User) -> None:
        store = self._store(user)
        folder = library_folder(store)
        with PhotoLibrary(store.path) as library:
            summary = index_photos(library, self.retriever(user), [folder])
        for path, reason in summary.failed:
            self.failed[(user.id, Path(path).stem)] = reason.replace(str(folder) + "/", "")
            Path(path).unlink(missing_ok=True)

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

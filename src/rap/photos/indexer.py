"""``rap photos index``: look at each new or changed photo once, as retrieval does, and keep it.

A file is unchanged when its path, size and modification time are as indexed;
when only the size or time moved, its SHA-256 decides; bytes already indexed
under another path are copied, not looked at again. Photos are looked at on
the retriever's threads (:mod:`rap.threads`), at most ``batch_images`` at once,
and each is committed with its regions in one transaction as it comes, so a
killed run resumes where it stopped. A bad file is counted and listed, never
fatal; files under the given folders that are gone are forgotten.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rap.embedding import FACE_SPACE, IMAGE_SPACE
from rap.errors import RapError
from rap.images import MAX_FILE_BYTES, check_image
from rap.photos.exif import exif_facts
from rap.photos.library import Known, PhotoLibrary, StoredRegion
from rap.photos.scan import Found, scan
from rap.retrieval import Retriever
from rap.threads import thread_imap

#: the detector's classes when the store holds no concept yet (proposal detectors ignore them)
DEFAULT_CATEGORIES = ("object",)


@dataclass
class IndexSummary:
    """What one run did; ``failed`` lists each bad file with why."""

    indexed: int = 0
    unchanged: int = 0
    copied: int = 0
    touched: int = 0
    forgotten: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        rate = self.indexed / self.seconds if self.seconds else 0.0
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "copied": self.copied,
            "touched": self.touched,
            "forgotten": self.forgotten,
            "failed": len(self.failed),
            "failures": [{"path": p, "reason": r} for p, r in self.failed],
            "seconds": round(self.seconds, 3),
            "photos_per_second": round(rate, 2),
            "cpu_ms_per_photo": round(1000 * self.cpu_seconds / self.indexed, 1) if self.indexed else None,
        }


@dataclass(frozen=True)
class _Result:
    found: Found
    sha256: str = ""
    pixels: tuple[int, int] = (0, 0)
    taken: str | None = None
    orientation: int = 1
    regions: tuple[StoredRegion, ...] = ()
    #: set when the bytes are already indexed (copy) or are the path's own (touch)
    reuse: str | None = None
    error: str | None = None


def models_of(retriever: Retriever) -> dict[str, str]:
    """What made a library's vectors; a library refuses any other."""
    store = retriever.store
    return {"encoder": store.encoder_id, "faces": store.faces_id, "detector": retriever.detector.id}


def index_photos(
    library: PhotoLibrary,
    retriever: Retriever,
    paths: Sequence[Path],
    *,
    reindex: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> IndexSummary:
    """Bring the library up to date with ``paths`` (folders recursively, and files)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    library.check_models(models_of(retriever), reset=reindex)
    summary = IndexSummary()
    known = library.known()
    found = list(scan(paths))
    summary.failed += [(str(f.path), f.error) for f in found if f.error]
    files = [f for f in found if not f.error]
    summary.forgotten = library.forget(_gone(known, paths, {str(f.path) for f in files}))
    todo = []
    for f in files:
        was = known.get(str(f.path))
        if was is not None and (was.size, was.mtime_ns) == (f.size, f.mtime_ns):
            summary.unchanged += 1
        else:
            todo.append(f)
    if on_total:
        on_total(len(todo))
    store = retriever.store
    store.embedder.load()  # loaded here, not by two threads at once
    categories = tuple(store.categories()) or DEFAULT_CATEGORIES
    retriever.detector  # noqa: B018 (built here, not by two threads at once)
    shas = {k.sha256 for k in known.values()}

    def work(f: Found) -> _Result:
        return _look(retriever, categories, f, known.get(str(f.path)), shas)

    for result in thread_imap(work, todo, retriever.cpu_threads, window=retriever.batch_images):
        _keep(library, result, summary, str(result.found.path) in known)
        if progress:
            progress(1)
    summary.seconds = time.perf_counter() - started
    summary.cpu_seconds = time.process_time() - cpu_started
    return summary


def _gone(known: dict[str, Known], roots: Sequence[Path], present: set[str]) -> list[str]:
    """Indexed paths under ``roots`` that the scan no longer found."""
    prefixes = [str(Path(r).absolute()) for r in roots]
    return [
        path for path in known
        if path not in present and any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)
    ]


def _look(retriever: Retriever, categories: tuple[str, ...], f: Found, was: Known | None, shas: set[str]) -> _Result:
    """One file's share of the work, on a pool thread; every way it can be bad becomes ``error``."""
    try:
        sha = _sha256(f.path)
        if was is not None and was.sha256 == sha:
            return _Result(f, sha, reuse="touch")
        if sha in shas:
            return _Result(f, sha, reuse="copy")
        checked = check_image(f.path)
        taken, orientation = exif_facts(f.path)
        looked = retriever.look(checked, categories)
    except RapError as exc:
        return _Result(f, error=exc.message)
    except OSError as exc:
        return _Result(f, error=f"{f.path}: {exc.strerror or exc}")
    regions = [StoredRegion(IMAGE_SPACE, r.source, r.label, looked.full_box(r.box), v) for r, v in zip(looked.regions, looked.vectors)]
    regions += [StoredRegion(FACE_SPACE, "face", "face", looked.full_box(face.box), face.vector) for face in looked.faces or []]
    return _Result(f, sha, looked.size, taken, orientation, tuple(regions))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        read = 0
        while chunk := handle.read(1 << 20):
            read += len(chunk)
            if read > MAX_FILE_BYTES:
                raise OSError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
            digest.update(chunk)
    return digest.hexdigest()


def _keep(library: PhotoLibrary, r: _Result, summary: IndexSummary, was_indexed: bool) -> None:
    """Write one result (main thread: the library's connection is used by one thread)."""
    path = str(r.found.path)
    copy = library.copy_of(r.sha256) if r.reuse == "copy" else None
    if r.reuse == "copy" and copy is None:
        r = _Result(r.found, error=f"{path}: its copy left the library while indexing; run again")
    if r.error is not None:
        summary.failed.append((path, r.error))
        if was_indexed:  # what it was is no longer what the path holds
            library.forget([path])
        return
    if r.reuse == "touch":
        library.touch(path, r.found.size, r.found.mtime_ns)
        summary.touched += 1
        return
    if copy is not None:
        photo, regions = copy
        library.put(path, r.found.size, r.found.mtime_ns, r.sha256, (photo.width, photo.height), photo.taken, photo.orientation, regions)
        summary.copied += 1
        return
    library.put(path, r.found.size, r.found.mtime_ns, r.sha256, r.pixels, r.taken, r.orientation, r.regions)
    summary.indexed += 1

"""``rap check``: whether a local store is whole, and repair of what can be rebuilt.

SQLite is the source of truth, so the checks go from it outwards:

1. the database itself (SQLite's ``integrity_check`` and ``foreign_key_check``);
2. every concept and image row against its digest (``schema.py``: content that
   SQLite's structure checks cannot see, such as an overwritten description);
3. every reference image file: present, and hashing to the name it is stored under;
4. every vector: its digest, the length of its space, unit norm (what every encoder
   stores), and exactly one image-space vector per reference image;
5. each FAISS index file against the vectors table: the same ids, the same vectors,
   and the factory string recorded in ``meta``.

``repair`` rebuilds what can be rebuilt: damaged or missing vectors are
re-embedded from their image files with the store's own encoder (and get a new
digest), indexes are rebuilt from the vectors table, and SQLite's indexes are
rebuilt (``REINDEX``) when only they are damaged. A missing or changed image
file, a concept or image row that no longer matches its digest, or damaged
tables cannot be rebuilt from anything inside the store: the report says to
restore from a backup (or to remove the image), and nothing is deleted; vectors
are not re-embedded while such rows are damaged (the store does not open).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rap.embedding import IMAGE_SPACE
from rap.errors import StoreError
from rap.reference_views import MAX_VIEWS
from rap.settings import Settings
from rap.store.files import ImageFiles, writable
from rap.store.index_cache import IndexCache, factory_key
from rap.store.local import LocalConceptStore
from rap.store.schema import DB_FILE, STORE_FORMAT, changed_rows, connect, digest_matches
from rap.store.vectors import DEFAULT_APPROXIMATE_ABOVE, VectorIndex, damaged

MAX_LISTED = 20
"""SQLite integrity messages listed at most; the rest are counted."""


@dataclass
class Problem:
    """One thing found wrong; ``repaired`` once ``--repair`` has fixed it."""

    part: str
    detail: str
    repairable: bool
    repaired: bool = False
    #: the reference image whose vectors are concerned, for a vector problem
    image: int | None = None


@dataclass
class Report:
    path: Path
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the store is whole now (every problem found was repaired)."""
        return all(problem.repaired for problem in self.problems)

    def as_json(self) -> dict[str, object]:
        return {"path": str(self.path), "ok": self.ok, "checked": self.checked, "problems": [asdict(p) for p in self.problems]}


def check_store(path: Path, *, repair: bool = False, settings: Settings | None = None) -> Report:
    """Check the store at ``path``; with ``repair``, rebuild what can be rebuilt. Raises only if there is no store."""
    path = Path(path).expanduser()
    db_file = path / DB_FILE
    if not db_file.is_file():
        raise StoreError(f"no store at {path}")
    if repair and not writable(path):
        raise StoreError(f"{path} is read-only: 'rap check' can look at this store but not repair it")
    report = Report(path)
    repair = repair and _holds_a_store(db_file)  # never write to what is not a rap store (an empty or foreign file)
    try:
        db = connect(db_file, read_only=not repair)
    except (sqlite3.DatabaseError, OSError) as exc:
        report.problems.append(Problem("database", f"{db_file} cannot be opened ({exc}); restore it from a backup", False))
        return report
    try:
        if _database(db, db_file, report, repair):
            files = ImageFiles(path)
            rows_changed, changed_images = _changed_rows(db, report)
            damaged_vectors = _images_and_vectors(db, files, report, changed_images, rows_changed)
            if repair and not rows_changed and any(p.part == "vector" for p in report.problems):
                _rekey(db, path, damaged_vectors, report, settings)
            _indexes(db, path, report, repair)
    except sqlite3.DatabaseError as exc:
        report.problems.append(Problem("database", f"{db_file} could not be read to the end ({exc}); restore it from a backup", False))
    finally:
        db.close()
    return report


def _holds_a_store(db_file: Path) -> bool:
    """Whether the file opens as a rap store, looked at read-only."""
    try:
        db = connect(db_file, read_only=True)
    except (sqlite3.DatabaseError, OSError):
        return False
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() == (STORE_FORMAT,)
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


def _database(db: sqlite3.Connection, db_file: Path, report: Report, repair: bool) -> bool:
    """SQLite's own check; True if the tables can be trusted for the checks that follow."""
    messages = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if messages != ["ok"]:
        only_indexes = all("index" in m for m in messages)
        if repair and only_indexes:
            db.execute("REINDEX")
            fixed = [row[0] for row in db.execute("PRAGMA integrity_check")] == ["ok"]
        else:
            fixed = False
        advice = "'rap check --repair' rebuilds SQLite's indexes" if only_indexes else "restore it from a backup"
        shown = messages[:MAX_LISTED] + ([f"... and {len(messages) - MAX_LISTED} more"] if len(messages) > MAX_LISTED else [])
        for message in shown:
            report.problems.append(Problem("database", f"{db_file}: {message} ({advice})", only_indexes, fixed))
        if not fixed:
            return False
    for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check").fetchall()[:MAX_LISTED]:
        report.problems.append(Problem("database", f"{db_file}: row {rowid} of {table} refers to a missing {parent} row", False))
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    format_row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone() if "meta" in tables else None
    if not format_row or format_row[0] != STORE_FORMAT:
        images = sum(1 for _ in ImageFiles(db_file.parent).files())
        report.problems.append(
            Problem("database", f"{db_file} holds no rap store (empty or foreign) beside {images} image file(s); restore it from a backup", False)
        )
        return False
    return True


def _changed_rows(db: sqlite3.Connection, report: Report) -> tuple[bool, set[int]]:
    """Concept and image rows that no longer match their digest (only a backup has them).

    Returns whether there are any, and the ids of the images among them.
    """
    restore = f"its row in {DB_FILE} changed since it was written (it does not match its digest): restore the store from a backup"
    concepts = changed_rows(db, "concepts")
    for concept_id in concepts:
        (name,) = db.execute("SELECT CAST(name AS BLOB) FROM concepts WHERE id = ?", (concept_id,)).fetchone()
        report.problems.append(Problem("concept", f"concept {concept_id} ({name.decode(errors='replace')!r}): {restore}", False))
    changed = changed_rows(db, "images")
    for image_id in changed:
        owner = db.execute(
            "SELECT CAST(c.name AS BLOB) FROM images i JOIN concepts c ON c.id = i.concept_id WHERE i.id = ?", (image_id,)
        ).fetchone()
        of = f" of <{owner[0].decode(errors='replace')}>" if owner else ""
        report.problems.append(Problem("image", f"image {image_id}{of}: {restore}", False, image=image_id))
    return bool(concepts or changed), set(changed)


def _images_and_vectors(
    db: sqlite3.Connection, files: ImageFiles, report: Report, changed_images: set[int], rows_changed: bool
) -> list[int]:
    """Check image files and vectors; return the ids of damaged vectors.

    The files of ``changed_images`` are not looked at (their rows cannot be trusted), and while
    any row has changed no vector is repairable (the store does not open to re-embed it).
    """
    images = db.execute(
        "SELECT i.id, i.file, i.sha256, c.name FROM images i JOIN concepts c ON c.id = i.concept_id ORDER BY i.id"
    ).fetchall()
    report.checked["concepts"] = db.execute("SELECT count(*) FROM concepts").fetchone()[0]
    report.checked["images"] = len(images)
    owners = {image_id: concept for image_id, *_, concept in images}
    file_ok: dict[int, bool] = {}
    per_concept = Counter(concept for *_, concept in images)
    for image_id, file, sha256, concept in images:
        if image_id in changed_images:
            file_ok[image_id] = False
            continue
        wrong = files.damage(file, sha256)
        file_ok[image_id] = wrong is None
        if wrong:
            remove = (
                f"rap concept edit {concept} --remove-image {image_id}" if per_concept[concept] > 1 else f"rap concept remove {concept}"
            )
            detail = f"image {image_id} of <{concept}> ({file}) is {wrong}: restore it from a backup, or '{remove}'"
            report.problems.append(Problem("image", detail, False))
    dims = {row[0][4:]: int(row[1]) for row in db.execute("SELECT key, value FROM meta WHERE key LIKE 'dim:%'")}
    bad: list[int] = []
    image_vectors = {image_id: 0 for image_id, *_ in images}
    count = 0
    rows = db.execute(f"SELECT id, image_id, space, vector, {digest_matches(db, 'vectors')} FROM vectors ORDER BY id")
    for vector_id, image_id, space, blob, sound in rows:
        count += 1
        dim = dims.get(space)
        vector = np.frombuffer(blob, np.float32) if len(blob) % 4 == 0 else np.empty(0, np.float32)
        if not sound or dim is None or len(vector) != dim or damaged(vector[None])[0]:
            why = (
                "changed since it was written: it does not match its digest" if not sound
                else "of a space with no recorded dimension" if dim is None
                else f"{len(blob)} bytes for {dim} floats" if len(vector) != dim
                else "not of unit length"
            )
            bad.append(vector_id)
            of = f" of <{owners[image_id]}>" if image_id in owners else ""
            detail = f"vector {vector_id} ({space}) of image {image_id}{of} is damaged ({why})"
            report.problems.append(Problem("vector", detail, not rows_changed and file_ok.get(image_id, False), image=image_id))
        elif space == IMAGE_SPACE and image_id in image_vectors:
            image_vectors[image_id] += 1
    report.checked["vectors"] = count
    reported = {p.image for p in report.problems if p.part == "vector"}
    for image_id, found in image_vectors.items():
        if not 1 <= found <= MAX_VIEWS and image_id not in reported:
            detail = f"image {image_id} has {found} sound image vectors, not 1 to {MAX_VIEWS}"
            report.problems.append(Problem("vector", detail, not rows_changed and file_ok[image_id], image=image_id))
    return bad


def _rekey(db: sqlite3.Connection, path: Path, damaged_ids: list[int], report: Report, settings: Settings | None) -> None:
    """Drop damaged vectors, then re-embed each image whose file is sound, with the store's own models."""
    db.execute("BEGIN IMMEDIATE")
    for start in range(0, len(damaged_ids), 900):
        chunk = damaged_ids[start : start + 900]
        db.execute(f"DELETE FROM vectors WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
    db.execute("COMMIT")
    sound = [problem for problem in report.problems if problem.part == "vector" and problem.repairable]
    with LocalConceptStore(path, settings=settings, create=False) as store:
        store.reembed(image_ids={p.image for p in sound if p.image is not None})
    for problem in sound:
        problem.repaired = True


def _indexes(db: sqlite3.Connection, path: Path, report: Report, repair: bool) -> None:
    """Each space's index file against the vectors table; rebuilt from it with ``repair``."""
    cache = IndexCache(path / "index", db, (), DEFAULT_APPROXIMATE_ABOVE, writable=repair)
    for key, dim in db.execute("SELECT key, value FROM meta WHERE key LIKE 'dim:%'").fetchall():
        space = key[4:]
        report.checked["indexes"] = report.checked.get("indexes", 0) + 1
        file = cache.file(space)
        try:
            ids, vectors = cache.stored(space)
        except StoreError:  # damaged vectors, reported above: the index cannot be checked against them
            continue
        index = VectorIndex.load(file, int(dim))
        recorded = db.execute("SELECT value FROM meta WHERE key = ?", (factory_key(space),)).fetchone()
        wrong = _index_differs(index, ids, vectors, recorded[0] if recorded else None)
        if not wrong:
            continue
        problem = Problem("index", f"{file.relative_to(path)} {wrong} (it is a cache of the vectors table)", True)
        report.problems.append(problem)
        if repair:
            cache.rebuild(space)
            problem.repaired = True


def _index_differs(index: VectorIndex | None, ids: np.ndarray, vectors: np.ndarray, recorded: str | None) -> str | None:
    if index is None:
        return "is missing or unreadable"
    present = np.sort(index.ids())
    if not np.array_equal(present, ids):
        lacks = len(np.setdiff1d(ids, present))
        extra = len(np.setdiff1d(present, ids))
        return f"lacks {lacks} stored vector(s) and holds {extra} that point at nothing"
    if not index.holds(ids, vectors):
        return "holds vectors that differ from the stored ones"
    if recorded is not None and recorded != index.factory:
        return f"was built as {index.factory}, but the store records {recorded}"
    return None

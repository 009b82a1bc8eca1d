"""Where training concepts come from: adapters that turn annotated datasets into scenes.

Every source, whatever its layout, yields :class:`Scene` objects: one query image
and the annotated objects in it, each with the image and box its *reference*
crop is cut from. For a detection dataset the reference is the object itself in
the same photo; for a video track it is the same object in another frame; for
an identity folder it is another photo of the same person. The builder never
needs to know which layout a scene came from.

Each format is a :class:`Source`, chosen by name through :data:`SOURCES`,
the registry mechanism every other backend uses: the command line's
``coco:annotations.json,images=train2017,name=coco`` is the scheme ``coco``
and its argument, the path and the options that format takes.

Formats read:

* ``coco``: COCO detection JSON (COCO, Objects365 and LVIS share it). Boxes are
  COCO's ``[x, y, width, height]`` in pixels.
* ``refcoco``: referring expressions. Either the original refs in JSON (the
  fields of ``refs(unc).p``: ``ann_id``, ``image_id``, ``sentences``) with the
  COCO ``instances`` file, or, without ``instances``, a plain JSON list of
  ``{"image", "box": [x0, y0, x1, y1], "category", "sentences": [...]}``. The
  original pickle is not read: unpickling runs code, so convert it once with
  ``json.dump(pickle.load(f), out)`` on a machine you trust.
* ``video``: TAO-style COCO JSON whose annotations carry ``track_id`` and whose
  images carry ``video_id`` (ImageNet-VID converts to it).
* ``identities``: CelebA-style, one folder per identity of whole-face photos.
* ``folders``: one folder per concept of photos; the category is the folder
  name without trailing digits (``dog_2`` is a dog).
"""

from __future__ import annotations

import json
import random
import re
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rap.errors import InvalidFormat, InvalidInput
from rap.images import IMAGE_SUFFIXES
from rap.registry import Registry

FloatBox = tuple[float, float, float, float]
"""A pixel box ``(x0, y0, x1, y1)`` as annotated, before clipping."""


@dataclass(frozen=True)
class SceneObject:
    """One annotated object in a query image."""

    identity: str
    """Unique within its source: an annotation, track or person id."""
    category: str
    box: FloatBox | None
    """Where it is in the query image; None when it is the whole image (no grounding)."""
    reference: Path
    reference_box: FloatBox | None
    sentences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scene:
    source: str
    image: Path
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True)
class Source(ABC):
    """A dataset to read, as the command line names it: ``kind:path[,key=value...]``."""

    #: the registry scheme that names the format
    kind: ClassVar[str]
    #: the ``key=value`` options the format takes after its path
    options: ClassVar[tuple[str, ...]] = ("images", "name")

    path: Path
    images: Path | None = None
    """Folder the JSON's file names are relative to (default: the JSON's folder)."""
    name: str | None = None
    """Label in the manifest (default: the kind)."""

    @property
    def label(self) -> str:
        return self.name or self.kind

    @classmethod
    def from_argument(cls, argument: str) -> Source:
        """``ann.json,images=train2017,name=coco`` -> the source, or one line saying what is wrong."""
        path, *pairs = argument.split(",")
        if not path:
            raise InvalidInput(f"name the {cls.kind} source's path: {cls.kind}:PATH")
        given: dict[str, Any] = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or key not in cls.options:
                known = ", ".join(f"{option}={'LABEL' if option == 'name' else 'PATH'}" for option in cls.options)
                raise InvalidInput(f"bad {cls.kind} source option {pair!r}; known: {known}")
            given[key] = value if key == "name" else Path(value)
        return cls(Path(path), **given)

    def scenes(self, seed: int = 0) -> Iterator[Scene]:
        """The scenes of this source; a malformed file is one :class:`InvalidFormat` line."""
        if not self.path.exists():
            raise InvalidInput(f"source {self.label}: {self.path} does not exist")
        return self._read(random.Random(seed))

    @abstractmethod
    def _read(self, rng: random.Random) -> Iterator[Scene]: ...


SOURCES: Registry[Source] = Registry(
    "data source", dict.fromkeys(("coco", "refcoco", "video", "identities", "folders"), "rap.data.sources")
)

SourceClass = TypeVar("SourceClass", bound=type[Source])


def _registered(help: str) -> Callable[[SourceClass], SourceClass]:
    """Class decorator: registers the format under its ``kind``, built from the spec's argument."""

    def decorate(cls: SourceClass) -> SourceClass:
        SOURCES.register(cls.kind, help=help)(cls.from_argument)
        return cls

    return decorate


def open_source(spec: str) -> Source:
    """The source that ``spec`` names (``KIND:PATH[,key=value...]``); an unknown kind lists the known ones."""
    return SOURCES.create(spec)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFormat(f"{path}: not readable JSON ({exc})") from None


def _xywh(box: Any) -> FloatBox:
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


@dataclass(frozen=True)
class _Annotation:
    id: str
    image: Path
    box: FloatBox
    category: str
    track: str | None
    video: str | None
    frame: int


def _coco_annotations(path: Path, images_root: Path | None) -> dict[str, _Annotation]:
    """COCO-format annotations by id, with file names and category names resolved.

    pycocotools adds nothing here but a dependency (it only indexes the same
    three lists), so the JSON is read directly.
    """
    data = _load_json(path)
    root = images_root or path.parent
    try:
        categories = {c["id"]: str(c.get("name") or "").strip() for c in data.get("categories", [])}
        images = {i["id"]: i for i in data["images"]}
        out: dict[str, _Annotation] = {}
        for n, ann in enumerate(data["annotations"]):
            image = images.get(ann["image_id"], {})
            video = image.get("video_id")
            out[str(ann.get("id", n))] = _Annotation(
                id=str(ann.get("id", n)),
                image=root / str(image.get("file_name", f"missing-image-{ann['image_id']}")),
                box=_xywh(ann["bbox"]),
                category=categories.get(ann.get("category_id"), ""),
                track=None if ann.get("track_id") is None else str(ann["track_id"]),
                video=None if video is None else str(video),
                frame=int(image.get("frame_index", image.get("id", 0)) or 0),
            )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidFormat(f"{path}: not COCO-format detection JSON ({type(exc).__name__}: {exc})") from None
    return out


@_registered("COCO detection JSON (COCO, Objects365, LVIS): coco:FILE[,images=DIR][,name=LABEL]")
@dataclass(frozen=True)
class CocoSource(Source):
    """Every annotated object is its own reference, cut from the same photo."""

    kind: ClassVar[str] = "coco"

    def _read(self, rng: random.Random) -> Iterator[Scene]:
        by_image: dict[Path, list[_Annotation]] = defaultdict(list)
        for ann in _coco_annotations(self.path, self.images).values():
            by_image[ann.image].append(ann)
        for image, anns in by_image.items():
            objects = tuple(SceneObject(a.id, a.category, a.box, a.image, a.box) for a in anns)
            yield Scene(self.label, image, objects)


@_registered(
    "referring expressions: refcoco:REFS.json[,instances=COCO.json][,images=DIR][,name=LABEL], or a plain JSON list"
)
@dataclass(frozen=True)
class RefcocoSource(Source):
    """Objects with the sentences that refer to them, which join each concept's info."""

    kind: ClassVar[str] = "refcoco"
    options: ClassVar[tuple[str, ...]] = ("images", "instances", "name")

    instances: Path | None = None
    """The COCO instances JSON the refs point into."""

    def _read(self, rng: random.Random) -> Iterator[Scene]:
        refs = _load_json(self.path)
        if not isinstance(refs, list):
            raise InvalidFormat(f"{self.path}: expected a JSON list of referring expressions")
        annotations = _coco_annotations(self.instances, self.images) if self.instances else None
        root = self.images or self.path.parent
        by_image: dict[Path, list[SceneObject]] = defaultdict(list)
        try:
            for n, ref in enumerate(refs):
                sentences = tuple(
                    (s.get("sent") or s.get("raw") or "") if isinstance(s, dict) else str(s) for s in ref.get("sentences", [])
                )
                if annotations is not None:
                    ann = annotations.get(str(ref["ann_id"]))
                    if ann is None:
                        continue
                    image, box, category = ann.image, ann.box, ann.category
                else:
                    image, box, category = root / ref["image"], tuple(float(v) for v in ref["box"]), str(ref.get("category", ""))
                ident = str(ref.get("ref_id", n))
                by_image[image].append(SceneObject(ident, category.strip(), box, image, box, tuple(s for s in sentences if s)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidFormat(f"{self.path}: not a referring-expression list ({type(exc).__name__}: {exc})") from None
        for image, objects in by_image.items():
            yield Scene(self.label, image, tuple(objects))


@_registered("video tracks in TAO-style COCO JSON: video:FILE[,images=DIR][,name=LABEL]")
@dataclass(frozen=True)
class VideoSource(Source):
    """Each track's reference is the same object in another frame."""

    kind: ClassVar[str] = "video"

    def _read(self, rng: random.Random) -> Iterator[Scene]:
        """One scene per video: the frame with most tracks is the query, each track's reference another frame."""
        tracks: dict[tuple[str, str], list[_Annotation]] = defaultdict(list)
        for ann in _coco_annotations(self.path, self.images).values():
            if ann.track is not None:
                tracks[(ann.video or "", ann.track)].append(ann)
        by_video: dict[str, dict[str, list[_Annotation]]] = defaultdict(dict)
        for (video, track), anns in tracks.items():
            by_video[video][track] = sorted(anns, key=lambda a: a.frame)
        for video, video_tracks in by_video.items():
            frames: dict[Path, int] = defaultdict(int)
            for anns in video_tracks.values():
                for ann in anns:
                    frames[ann.image] += 1
            query = max(sorted(frames), key=lambda p: frames[p])
            objects = []
            for track, anns in video_tracks.items():
                here = next((a for a in anns if a.image == query), None)
                if here is None:
                    continue
                elsewhere = [a for a in anns if a.image != query] or [here]
                ref = rng.choice(elsewhere)
                objects.append(SceneObject(f"{video}/{track}", here.category, here.box, ref.image, ref.box))
            yield Scene(self.label, query, tuple(objects))


@dataclass(frozen=True)
class _PhotoFolders(Source):
    """A folder per identity: the first photo is the reference, every other photo a query."""

    options: ClassVar[tuple[str, ...]] = ("name",)
    #: every concept's category; None: the folder's name without trailing digits
    category: ClassVar[str | None]

    def _read(self, rng: random.Random) -> Iterator[Scene]:
        folders = sorted(p for p in self.path.iterdir() if p.is_dir())
        if not folders:
            raise InvalidFormat(f"{self.path}: expected one sub-folder per {'identity' if self.category else 'concept'}")
        for folder in folders:
            photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            name = self.category or re.sub(r"[\d_\-\s]+$", "", folder.name).replace("_", " ")
            for query in photos[1:]:
                yield Scene(self.label, query, (SceneObject(folder.name, name, None, photos[0], None),))


@_registered("one folder of whole-face photos per person (CelebA-style): identities:DIR[,name=LABEL]")
@dataclass(frozen=True)
class IdentitySource(_PhotoFolders):
    kind: ClassVar[str] = "identities"
    category: ClassVar[str | None] = "person"


@_registered("one folder of photos per concept, the category its name without digits: folders:DIR[,name=LABEL]")
@dataclass(frozen=True)
class FolderSource(_PhotoFolders):
    kind: ClassVar[str] = "folders"
    category: ClassVar[str | None] = None

"""Reference crops and their augmentations, made in worker processes.

A concept's reference image is its object cut out with a margin (paper Fig. 3),
plus a few augmented copies so the model learns to match a concept across
views, not pixels. Augmentation is PIL only: flips, small rotations, colour
jitter and scale jitter. A :data:`NovelView` hook can add synthesised views
(the paper mentions novel-view synthesis); none is required.

The jobs here take and return only paths and numbers, so that
:class:`concurrent.futures.ProcessPoolExecutor` can run them: decoding, cropping
and JPEG encoding are the slow part of a build, and they parallelise perfectly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from rap.data.sources import FloatBox
from rap.errors import RapError
from rap.images import MIN_SIDE, crop, load_image

NovelView = Callable[[Image.Image, random.Random], Image.Image]
"""Makes a new view of a crop (e.g. a novel-view synthesis model). It must be a
module-level function so worker processes can receive it; it gets a seeded RNG."""


@dataclass(frozen=True)
class AugmentSettings:
    copies: int = 1
    """Augmented crops per concept, besides the plain one."""
    flip: float = 0.5
    rotate_degrees: float = 15.0
    color: float = 0.3
    """Brightness, contrast and saturation each scaled by a factor in 1 ± this."""
    scale: float = 0.2
    """Resized by a factor in 1 ± this."""


def augment(image: Image.Image, settings: AugmentSettings, rng: random.Random, novel_view: NovelView | None = None) -> Image.Image:
    """One random, label-preserving variation of a crop."""
    if novel_view is not None:
        image = novel_view(image, rng)
    if rng.random() < settings.flip:
        image = ImageOps.mirror(image)
    if settings.rotate_degrees:
        angle = rng.uniform(-settings.rotate_degrees, settings.rotate_degrees)
        image = image.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(127, 127, 127))
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - settings.color, 1 + settings.color))
    factor = rng.uniform(1 - settings.scale, 1 + settings.scale)
    size = (max(8, round(image.width * factor)), max(8, round(image.height * factor)))
    return image.resize(size, Image.BICUBIC)


def clip_box(box: FloatBox, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The box rounded and clipped to the image; None if nothing of it is left."""
    x0, y0 = max(0, round(box[0])), max(0, round(box[1]))
    x1, y1 = min(size[0], round(box[2])), min(size[1], round(box[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass(frozen=True)
class CropJob:
    image: Path
    box: FloatBox | None
    out_dir: Path
    stem: str
    margin: float
    seed: int
    settings: AugmentSettings
    novel_view: NovelView | None = None


@dataclass(frozen=True)
class CropResult:
    files: tuple[str, ...] = ()
    """Crop file names in ``out_dir``: the plain one first, then the augmented copies."""
    skip: str | None = None
    """Why no crop was made: a counted warning kind."""
    message: str = ""


def make_crops(job: CropJob) -> CropResult:
    """Cut a reference crop and its augmented copies; a bad image is a skip, never a raise."""
    try:
        image = load_image(job.image).image
    except RapError as exc:
        return CropResult(skip="missing_image", message=exc.message)
    box = (0, 0, image.width, image.height) if job.box is None else clip_box(job.box, image.size)
    if box is None:
        return CropResult(skip="empty_box", message=f"{job.image}: box {job.box} lies outside the image")
    plain = crop(image, box, job.margin)
    rng = random.Random(job.seed)
    views = [plain] + [augment(plain, job.settings, rng, job.novel_view) for _ in range(job.settings.copies)]
    files = []
    for n, view in enumerate(views):
        name = f"{job.stem}_{n}.jpg"
        view.save(job.out_dir / name, quality=92)
        files.append(name)
    return CropResult(files=tuple(files))


def image_size(path: Path) -> tuple[int, int] | str:
    """An image's size as rap sees it (EXIF orientation applied), or why it cannot be read."""
    try:
        return load_image(path, shorter_side=MIN_SIDE).size  # decoded small: only its size is wanted
    except RapError as exc:
        return exc.message

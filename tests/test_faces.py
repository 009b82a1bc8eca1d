"""Face analyzers: the real dlib models find the astronaut's face, and find it again.

astronaut.jpg is NASA's public-domain portrait of Eileen Collins (256 px), whose
face is about 45 px wide: small enough that the detector must upsample to see it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from rap.encoders import FACE_ANALYZERS, Face, FaceAnalyzer, create_face_analyzer
from rap.errors import UnknownBackend
from rap.images import load_image
from rap.threads import thread_map

PHOTOS = Path(__file__).parent / "photos"
OBJECT_PHOTOS = sorted(p for p in PHOTOS.glob("*.jpg") if p.stem not in {"astronaut", "hopper"})


def test_face_analyzers_are_dlib_and_none() -> None:
    assert {"dlib", "none"} <= set(FACE_ANALYZERS.names())
    assert create_face_analyzer("none") is None


@pytest.mark.parametrize("spec", ["opencv", "dlib:cnn"])
def test_unknown_face_analyzer_lists_known_ones(spec: str) -> None:
    with pytest.raises(UnknownBackend, match="known: .*dlib, none"):
        create_face_analyzer(spec)


@pytest.fixture(scope="module")
def dlib_faces() -> FaceAnalyzer:
    analyzer = create_face_analyzer("dlib")
    assert analyzer is not None
    return analyzer


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return load_image(PHOTOS / "astronaut.jpg").image


@pytest.fixture(scope="module")
def astronaut_face(dlib_faces: FaceAnalyzer, astronaut: Image.Image) -> Face:
    faces = dlib_faces.faces(astronaut)
    assert len(faces) == 1
    return faces[0]


def center(face: Face) -> tuple[float, float]:
    x0, y0, x1, y1 = face.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def only_face(analyzer: FaceAnalyzer, image: Image.Image) -> Face:
    faces = analyzer.faces(image)
    assert len(faces) == 1
    return faces[0]


@pytest.mark.slow
def test_finds_the_astronauts_face(dlib_faces: FaceAnalyzer, astronaut_face: Face) -> None:
    assert dlib_faces.id == "dlib" and dlib_faces.dim == 128
    x0, y0, x1, y1 = astronaut_face.box
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
    assert 30 <= x1 - x0 <= 80 and 30 <= y1 - y0 <= 80  # a head, not the whole suit
    cx, cy = center(astronaut_face)
    assert 90 <= cx <= 130 and 40 <= cy <= 90  # her face is left of centre, near the top
    assert astronaut_face.vector.shape == (128,) and astronaut_face.vector.dtype == np.float32
    assert np.linalg.norm(astronaut_face.vector) == pytest.approx(1.0, abs=1e-5)


Change = Callable[[Image.Image], Image.Image]
Move = Callable[[float, float], tuple[float, float]]


def resized(side: int) -> tuple[Change, Move]:
    return (
        lambda image: image.resize((side, side), Image.Resampling.LANCZOS),
        lambda x, y: (x * side / 256, y * side / 256),
    )


CHANGES: dict[str, tuple[Change, Move]] = {
    "mirrored": (ImageOps.mirror, lambda x, y: (256 - x, y)),
    "smaller": resized(200),
    "larger": resized(720),  # large enough that the detector does not upsample
    "cropped": (lambda image: image.crop((30, 15, 236, 226)), lambda x, y: (x - 30, y - 15)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", CHANGES)
def test_same_face_again_is_within_threshold(
    dlib_faces: FaceAnalyzer, astronaut: Image.Image, astronaut_face: Face, name: str
) -> None:
    change, move = CHANGES[name]
    face = only_face(dlib_faces, change(astronaut))
    width = face.box[2] - face.box[0]
    assert np.allclose(center(face), move(*center(astronaut_face)), atol=0.2 * width)
    assert np.linalg.norm(face.vector - astronaut_face.vector) < dlib_faces.match_threshold


@pytest.mark.slow
@pytest.mark.parametrize("path", OBJECT_PHOTOS, ids=lambda p: p.stem)
def test_no_face_in_object_photos(dlib_faces: FaceAnalyzer, path: Path) -> None:
    assert dlib_faces.faces(load_image(path).image) == []


@pytest.mark.slow
def test_faces_come_largest_first(dlib_faces: FaceAnalyzer, astronaut: Image.Image) -> None:
    canvas = Image.new("RGB", (600, 400), "white")
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut.resize((320, 320), Image.Resampling.LANCZOS), (270, 40))
    faces = dlib_faces.faces(canvas)
    assert len(faces) == 2
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas[0] > areas[1]
    assert center(faces[0])[0] > 300  # the larger copy is on the right
    assert np.linalg.norm(faces[0].vector - faces[1].vector) < dlib_faces.match_threshold


@pytest.mark.slow
def test_another_womans_face_is_beyond_both_thresholds(dlib_faces: FaceAnalyzer, astronaut_face: Face) -> None:
    # hopper.jpg: Grace Hopper's Navy portrait, the only second real person in tests/photos
    hopper = only_face(dlib_faces, load_image(PHOTOS / "hopper.jpg").image)
    distance = float(np.linalg.norm(hopper.vector - astronaut_face.vector))
    assert dlib_faces.match_threshold < dlib_faces.confirm_threshold < distance


def test_large_photos_are_searched_reduced_and_described_at_full_size(
    astronaut: Image.Image, astronaut_face: Face
) -> None:
    from rap.encoders.face import DlibFaceAnalyzer

    large = astronaut.resize((1024, 1024), Image.Resampling.LANCZOS)
    reduced, full = only_face(DlibFaceAnalyzer(side=384), large), only_face(DlibFaceAnalyzer(side=4096), large)
    width = full.box[2] - full.box[0]
    assert np.allclose(center(reduced), center(full), atol=0.1 * width)
    assert np.allclose(center(reduced), [4 * c for c in center(astronaut_face)], atol=0.2 * width)
    assert np.linalg.norm(reduced.vector - full.vector) < DlibFaceAnalyzer.match_threshold / 2


@pytest.mark.slow
def test_threads_looking_for_faces_at_once_find_what_one_finds(dlib_faces: FaceAnalyzer) -> None:
    """dlib's models keep per-call state, so each thread has its own: results do not mix."""
    photos = [load_image(PHOTOS / name).image for name in ("astronaut.jpg", "hopper.jpg", "dog_00.jpg")] * 3
    alone = [dlib_faces.faces(photo) for photo in photos]
    together = thread_map(dlib_faces.faces, photos, 3)
    assert [[face.box for face in faces] for faces in together] == [[face.box for face in faces] for faces in alone]
    for faces, expected in zip(together, alone):
        for face, same in zip(faces, expected):
            np.testing.assert_allclose(face.vector, same.vector, atol=1e-6)


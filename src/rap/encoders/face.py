"""``dlib``: a face analyzer that finds and describes faces offline.

A general image encoder sees "a person" before it sees who; a face descriptor
tells people apart. ``dlib`` uses dlib's HOG frontal face detector, its 5-point
landmark model and its ResNet face descriptor, with the model files that the
``face_recognition_models`` package ships on PyPI.

Thresholds: dlib documents 0.6 as the same-person distance between *raw*
descriptors (99.38 % on LFW). Raw descriptors are not unit length: on 12
faces (the sample photos shipped by scikit-image, face_recognition and
insightface) their norms ran from 1.36 to 1.59, median 1.44, and normalising
shrank pair distances by a factor of 0.64 to 0.73, median 0.69. So 0.6 raw is
0.6 / 1.44 = 0.42 normalised; there the same-person pairs measured 0.24 to 0.31
and the closest pair of different people 0.43. LFW's operating point is too
loose for a photo library: two different women measured 0.30 and 0.33 in a
user's trial. So 0.42 is only ``confirm_threshold`` (a face that close
confirms an image match, one farther rejects it), and a face admits a person
on its own under ``match_threshold`` 0.28 (0.40 raw), below both women.
Not measured, for want of photos: the share of real same-person pairs
between 0.28 and 0.42, which now need the image encoder to agree.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
from PIL import Image

from rap._imports import require
from rap.encoders import FACE_ANALYZERS
from rap.encoders.base import Face, FaceAnalyzer, l2_normalize
from rap.errors import UnknownBackend
from rap.images import rgb
from rap.settings import Settings, default

UPSAMPLE_BELOW = 640
"""Longer side (px) under which the detector also looks at a 2x image: the HOG
detector misses faces under about 80 px, which in a small photo is most faces.
Larger photos are instead looked at reduced to ``face_side`` (a setting), since
the detector's time grows with the pixels it scans."""


@FACE_ANALYZERS.register("dlib", help="dlib HOG face detector and ResNet face descriptors; offline")
def create(argument: str, *, settings: Settings) -> DlibFaceAnalyzer:
    """dlib's models, looking for faces at ``settings.face_side``."""
    if argument:
        raise UnknownBackend(
            f"unknown face analyzer 'dlib:{argument}': dlib takes no argument; "
            f"known: {', '.join(FACE_ANALYZERS.names())}"
        )
    return DlibFaceAnalyzer(side=settings.face_side)


class DlibFaceAnalyzer(FaceAnalyzer):
    """Frontal faces with unit-length 128-d descriptors, largest face first."""

    id = "dlib"
    dim = 128
    match_threshold = 0.28
    confirm_threshold = 0.42

    def __init__(self, side: int = default("face_side")) -> None:
        """``side``: the shorter side (px) faces are looked for at (the setting ``face_side``)."""
        #: photos larger than this (shorter side, px) are reduced to it for detection only
        self.side = side
        self._dlib = require("dlib", "offline")
        with warnings.catch_warnings():  # it imports pkg_resources, which warns on import
            warnings.simplefilter("ignore")
            self._files = require("face_recognition_models", "offline")
        self._models = threading.local()
        self._loaded()  # a missing model file is an error now, not at the first photo

    def _loaded(self) -> tuple[Any, Any, Any]:
        """This thread's detector, landmark model and descriptor: dlib's models keep
        per-call state inside them, so threads looking for faces at once (see
        :mod:`rap.threads`) each load their own."""
        models = getattr(self._models, "loaded", None)
        if models is None:
            dlib, files = self._dlib, self._files
            models = self._models.loaded = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(files.pose_predictor_five_point_model_location()),
                dlib.face_recognition_model_v1(files.face_recognition_model_location()),
            )
        return models

    def faces(self, image: Image.Image) -> list[Face]:
        image = rgb(image)
        pixels = np.ascontiguousarray(np.asarray(image))
        width, height = image.size
        detector, landmark_model, descriptor = self._loaded()
        found = []
        for rect in self._detect(detector, image):
            # dlib's right and bottom are inclusive and may lie outside the image
            box = (
                max(0, rect.left()),
                max(0, rect.top()),
                min(width, rect.right() + 1),
                min(height, rect.bottom() + 1),
            )
            if box[0] >= box[2] or box[1] >= box[3]:
                continue
            landmarks = landmark_model(pixels, rect)
            vector = np.asarray(descriptor.compute_face_descriptor(pixels, landmarks))
            found.append(Face(box=box, vector=l2_normalize(vector[None])[0]))
        return sorted(found, key=_area, reverse=True)

    def _detect(self, detector: Any, image: Image.Image) -> list[Any]:
        """Face rectangles in ``image``'s pixels: small photos are also scanned at 2x,
        large ones are scanned reduced to :attr:`side` and the rectangles scaled back.
        The scan is on grey levels: the HOG detector takes the strongest gradient of the
        three colours otherwise, which costs a third more (17 against 13 ms a photo) and
        found the same faces, with the same boxes, in the photos tried."""
        grey = image.convert("L")
        if max(image.size) < UPSAMPLE_BELOW:
            return list(detector(np.asarray(grey), 1))
        scale = min(1.0, self.side / min(image.size))
        if scale == 1.0:
            return list(detector(np.asarray(grey), 0))
        small = grey.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
        return [
            self._dlib.rectangle(
                round(rect.left() / scale), round(rect.top() / scale), round(rect.right() / scale), round(rect.bottom() / scale)
            )
            for rect in detector(np.asarray(small), 0)
        ]


def _area(face: Face) -> int:
    x0, y0, x1, y1 = face.box
    return (x1 - x0) * (y1 - y0)

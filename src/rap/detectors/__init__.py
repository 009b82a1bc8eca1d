"""Region detectors, chosen by name.

Known detectors: ``owlv2:<hub name or folder>`` and ``grounding-dino:<hub name
or folder>`` (open-vocabulary, through transformers), ``multiscale`` (model-free
crops at several scales), ``selective-search`` (OpenCV's proposals) and ``none``
(whole-image queries only).
"""

from __future__ import annotations

from rap.detectors.base import Region, RegionDetector
from rap.registry import Registry

DETECTORS: Registry[RegionDetector] = Registry(
    "region detector",
    {
        "multiscale": "rap.detectors.proposals",
        "selective-search": "rap.detectors.proposals",
        "none": "rap.detectors.proposals",
        "owlv2": "rap.detectors.open_vocabulary",
        "grounding-dino": "rap.detectors.open_vocabulary",
    },
)


def create_detector(spec: str) -> RegionDetector:
    """Build the region detector named by ``spec`` (see :data:`DETECTORS`)."""
    return DETECTORS.create(spec)


__all__ = ["DETECTORS", "Region", "RegionDetector", "create_detector"]

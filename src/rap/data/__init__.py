"""Training data for personalization: ``rap data build`` and ``rap data stats``.

See :mod:`rap.data.build` for the pipeline and output layout, :mod:`rap.data.sources`
for the dataset formats read, and :mod:`rap.data.tasks` for the tasks and the
grounding coordinate convention.
"""

from __future__ import annotations

from rap.data.annotator import (
    ANNOTATORS,
    Annotator,
    GeneratorAnnotator,
    GeneratorAnnotatorOptions,
    TemplateAnnotator,
    create_annotator,
)
from rap.data.augment import AugmentSettings, NovelView
from rap.data.build import BuildConfig, BuildReport, build_dataset
from rap.data.sources import SOURCES, Source, open_source
from rap.data.stats import dataset_stats
from rap.data.tasks import TASKS

__all__ = [
    "ANNOTATORS",
    "SOURCES",
    "TASKS",
    "Annotator",
    "AugmentSettings",
    "BuildConfig",
    "BuildReport",
    "GeneratorAnnotator",
    "GeneratorAnnotatorOptions",
    "NovelView",
    "Source",
    "TemplateAnnotator",
    "build_dataset",
    "create_annotator",
    "dataset_stats",
    "open_source",
]

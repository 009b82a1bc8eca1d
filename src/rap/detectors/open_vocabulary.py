"""Open-vocabulary detectors through transformers: OWLv2 and Grounding DINO.

The paper finds regions of interest with an open-vocabulary detector whose
classes are the categories stored in the database, so a query photo is searched
for dogs only when the user has a dog. Both model families take category names
as text and return boxes with per-category scores; what differs between them is
small, and lives in a :class:`Family`:

* how the category names become text: OWLv2 embeds one query per category
  ("a photo of a dog"), Grounding DINO reads one prompt ("dog. cat.");
* how a box's scores per category are read from the logits: OWLv2 has one logit
  per query, Grounding DINO one per prompt token, so a category scores the best
  of its own tokens;
* what the boxes are relative to: OWLv2 pads each image to a square at the
  bottom and right before resizing, so its boxes are relative to that square;
  Grounding DINO's are relative to the image.

Spec: ``owlv2[:<hub name or folder>][@<threshold>]`` and the same for
``grounding-dino``; ``owlv2:@0.05`` keeps the default model with another score
threshold. The models are loaded once, on cuda when there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from rap._imports import loading_checkpoint, require
from rap.detectors import DETECTORS
from rap.detectors.base import Region, RegionDetector
from rap.detectors.proposals import pixel_box, select_distinct
from rap.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    import torch

#: at most this many regions an image: each is cropped and embedded
MAX_REGIONS = 10
#: boxes of one category overlapping more than this show the same thing
NMS_IOU = 0.5


@dataclass(frozen=True)
class Family:
    """What one open-vocabulary model family does differently; the rest is shared."""

    scheme: str
    #: ``config.model_type`` of the models this family can read
    model_type: str
    default_model: str
    default_threshold: float
    #: boxes are relative to the image padded to a square at the bottom and right
    pads_to_square: bool
    #: the text given to the processor for each image, from cleaned category names
    prompt: Callable[[list[str]], str | list[str]]
    #: ``(logits, categories, tokenizer)`` to ``(images, boxes, categories)`` probabilities
    category_scores: Callable[[torch.Tensor, list[str], Any], torch.Tensor]


def _owl_prompt(categories: list[str]) -> list[str]:
    # OWL's text encoder is CLIP's, trained on captions: the prompt template helps it.
    return [f"a photo of a {category}" for category in categories]


def _owl_scores(logits: torch.Tensor, categories: list[str], tokenizer: Any) -> torch.Tensor:
    return logits.sigmoid()


def _dino_prompt(categories: list[str]) -> str:
    return ". ".join(categories) + "."


def _dino_scores(logits: torch.Tensor, categories: list[str], tokenizer: Any) -> torch.Tensor:
    """Per category, the best probability over the prompt tokens that spell it.

    Reading the category's own token span, rather than decoding whichever tokens
    pass a text threshold, always yields one of the stored categories as label.
    """
    import torch

    offsets = tokenizer(_dino_prompt(categories), return_offsets_mapping=True)["offset_mapping"]
    probs = logits.sigmoid()
    columns, start = [], 0
    for category in categories:
        end = start + len(category)
        tokens = [
            i
            for i, (a, b) in enumerate(offsets)
            if start <= a < b <= end and i < probs.shape[-1]  # the model cuts long prompts
        ]
        columns.append(probs[..., tokens].amax(-1) if tokens else probs.new_zeros(probs.shape[:-1]))
        start = end + 2  # past ". "
    return torch.stack(columns, dim=-1)


OWLV2 = Family(
    scheme="owlv2",
    model_type="owlv2",
    default_model="google/owlv2-base-patch16-ensemble",
    # OWL's sigmoid scores are low even for clear hits; 0.1 is its authors' default.
    default_threshold=0.1,
    pads_to_square=True,
    prompt=_owl_prompt,
    category_scores=_owl_scores,
)
GROUNDING_DINO = Family(
    scheme="grounding-dino",
    model_type="grounding-dino",
    # Tiny (Swin-T) rather than base: twice as fast on a CPU, and the retriever
    # checks every region by embedding anyway, so the detector needs recall, not
    # the last points of box precision.
    default_model="IDEA-Research/grounding-dino-tiny",
    # A little under the authors' 0.35 box threshold: a missed region costs more
    # than an extra crop.
    default_threshold=0.3,
    pads_to_square=False,
    prompt=_dino_prompt,
    category_scores=_dino_scores,
)


def clean_category(category: str) -> str:
    """Lower case, single spaces and no periods: Grounding DINO reads periods as separators."""
    return " ".join(category.replace(".", " ").lower().split())


class OpenVocabularyDetector(RegionDetector):
    """Finds the given categories with an open-vocabulary model of one :class:`Family`."""

    def __init__(
        self,
        family: Family,
        model: str | None = None,
        threshold: float | None = None,
        max_regions: int = MAX_REGIONS,
    ) -> None:
        self.family = family
        self.model_name = model or family.default_model
        self.threshold = family.default_threshold if threshold is None else threshold
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidInput(
                f"{family.scheme}: the score threshold must be in [0, 1], got {self.threshold}"
            )
        self.max_regions = max_regions
        self.id = f"{family.scheme}:{self.model_name}"
        if self.threshold != family.default_threshold:
            self.id += f"@{self.threshold:g}"
        torch = require("torch", "paper")
        transformers = require("transformers", "paper")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        with loading_checkpoint(f"{family.model_type} detector", self.model_name):
            config = transformers.AutoConfig.from_pretrained(self.model_name)
            if config.model_type != family.model_type:
                raise ConfigError(
                    f"{self.id}: {self.model_name} is a {config.model_type} model, not {family.model_type}; "
                    f"use the matching detector scheme"
                )
            self.processor = transformers.AutoProcessor.from_pretrained(self.model_name)
            self.model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(self.model_name)
        self.model.to(self.device).eval()

    def detect(
        self, images: Sequence[Image.Image], categories: Sequence[str]
    ) -> list[list[Region]]:
        labels: dict[str, str] = {}  # cleaned name -> the category as the caller spelled it
        for category in categories:
            labels.setdefault(clean_category(category), category)
        labels.pop("", None)
        if not images or not labels:
            return [[] for _ in images]
        import torch

        names = list(labels)
        prompt = self.family.prompt(names)
        inputs = self.processor(
            images=[image.convert("RGB") for image in images],
            text=[prompt] * len(images),
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        scores = self.family.category_scores(outputs.logits.float(), names, self.processor.tokenizer)
        return [
            self._regions(image.size, s, b, list(labels.values()))
            for image, s, b in zip(images, scores.cpu(), outputs.pred_boxes.float().cpu())
        ]

    def _regions(
        self,
        size: tuple[int, int],
        scores: torch.Tensor,
        boxes: torch.Tensor,
        labels: list[str],
    ) -> list[Region]:
        """Threshold, map to pixels, suppress overlaps per category, best first."""
        scale_x, scale_y = (max(size),) * 2 if self.family.pads_to_square else size
        best, index = scores.max(dim=-1)
        candidates: dict[str, list[Region]] = {}
        for query in best.argsort(descending=True).tolist():
            score = float(best[query])
            if score < self.threshold:
                break
            cx, cy, w, h = boxes[query].tolist()
            corners = (
                (cx - w / 2) * scale_x,
                (cy - h / 2) * scale_y,
                (cx + w / 2) * scale_x,
                (cy + h / 2) * scale_y,
            )
            box = pixel_box(corners, size)
            if box is not None:
                label = labels[int(index[query])]
                candidates.setdefault(label, []).append(Region(box, label, score, "detector"))
        kept = [
            group[i]
            for group in candidates.values()
            for i in select_distinct([r.box for r in group], NMS_IOU, self.max_regions)
        ]
        return sorted(kept, key=lambda r: -(r.score or 0.0))[: self.max_regions]


def _parse(family: Family, argument: str) -> OpenVocabularyDetector:
    """Split ``<model>[@<threshold>]``; hub names cannot hold an ``@``, so the last one splits."""
    model, threshold = argument, None
    if "@" in argument:
        model, _, text = argument.rpartition("@")
        try:
            threshold = float(text)
        except ValueError:
            raise InvalidInput(
                f"{family.scheme}:{argument}: after @ comes a score threshold, e.g. {family.scheme}:@0.2"
            ) from None
    return OpenVocabularyDetector(family, model or None, threshold)


@DETECTORS.register(
    "owlv2",
    help="OWLv2 open-vocabulary detector (owlv2:<hub name or folder>[@threshold])",
    default_argument=OWLV2.default_model,
)
def _owlv2(argument: str) -> RegionDetector:
    return _parse(OWLV2, argument)


@DETECTORS.register(
    "grounding-dino",
    help="Grounding DINO open-vocabulary detector (grounding-dino:<hub name or folder>[@threshold])",
    default_argument=GROUNDING_DINO.default_model,
)
def _grounding_dino(argument: str) -> RegionDetector:
    return _parse(GROUNDING_DINO, argument)

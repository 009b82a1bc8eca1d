"""``clip:<hub name or folder>``: the paper's image encoder, CLIP's vision tower.

RAP keys its database by CLIP ViT-L/14-336 image embeddings (the projected
``image_embeds``, L2-normalised, compared by Euclidean distance in a flat FAISS
index). Any CLIP checkpoint that transformers can load works: a hub name (from
the local cache when offline) or a folder written by ``save_pretrained``.

``match_threshold`` 0.70 (cosine similarity 0.755) could not be calibrated here,
since ViT-L/14 weights cannot be downloaded on the machines rap is built on.
It is set from published numbers: DreamBooth (Ruiz et al., CVPR 2023, Table 1)
reports a mean CLIP image-image cosine similarity of 0.885 between real photos
of the same subject (distance 0.48), while photos of unrelated things typically
score 0.4 to 0.6 (distance 0.9 to 1.1); 0.70 sits between the two, nearer the
same-subject side so that another object of the same kind is less often taken
for the user's.
Recalibrate it as the offline encoder was when the weights are at hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from rap._imports import loading_checkpoint, require
from rap.encoders import ENCODERS
from rap.encoders.base import ImageEncoder, l2_normalize
from rap.settings import Settings


@ENCODERS.register(
    "clip",
    help="the paper's encoder: CLIP's vision tower via transformers; a hub name or local folder",
    default_argument="openai/clip-vit-large-patch14-336",
)
def create(argument: str, *, settings: Settings) -> ClipEncoder:
    """CLIP from a hub name or folder; it takes no setting of its own."""
    return ClipEncoder(argument)


class ClipEncoder(ImageEncoder):
    """CLIP ``image_embeds``, on CUDA in float16 where there is a GPU, else on the CPU."""

    match_threshold = 0.70

    def __init__(self, name_or_path: str) -> None:
        self._torch = require("torch", "paper")
        transformers = require("transformers", "paper")
        self.id = f"clip:{name_or_path}"
        with loading_checkpoint("CLIP model", name_or_path):
            self._processor = transformers.AutoImageProcessor.from_pretrained(name_or_path)
            model = transformers.CLIPVisionModelWithProjection.from_pretrained(name_or_path)
        cuda = self._torch.cuda.is_available()
        self._device = "cuda" if cuda else "cpu"
        self._dtype = self._torch.float16 if cuda else self._torch.float32
        self._model = model.to(self._device, self._dtype).eval()
        self.dim = int(model.config.projection_dim)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = [np.zeros((0, self.dim), dtype=np.float32)]
        with self._torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
                pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
                output = self._model(pixel_values=pixels.to(self._device, self._dtype))
                rows.append(output.image_embeds.float().cpu().numpy())
        return l2_normalize(np.concatenate(rows))

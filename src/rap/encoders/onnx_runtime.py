"""ONNX Runtime for the offline encoder: exported once, quantized once, run on one thread per call.

The files are made on the user's machine from the published weights and kept
in ``$RAP_HOME/cache``, named by what they are made from, each written whole
or not at all (a partial file is never taken for a finished one).

Quantization is static, per channel, to int8 weights and uint8 activations in
the QDQ format, which ONNX Runtime fuses into integer convolutions: about 2x
less CPU per crop than float32 (BENCHMARKS.md). EfficientNet-Lite was designed
for it (ReLU6 bounds every activation, no squeeze-and-excitation), and the
first and last convolutions, where rounding costs most, stay float.
Activation ranges are calibrated on the crops the retriever cuts from the
photos that ship with rap (:mod:`rap.sample_photos`).

**The same vectors on every CPU.** ONNX Runtime's x86 kernels for a uint8 x
int8 convolution differ by CPU: with VNNI (``vpdpbusd``) or on ARM (``sdot``,
``udot``, ``smull``) each product is summed in 32 bits, exactly; on AVX2 and
AVX-512 without VNNI, ``vpmaddubsw`` first adds *two* adjacent products in a
signed 16-bit lane and saturates there. With 8-bit weights a pair can reach
2 x 255 x 127 = 64,770, far past 32,767, and the vectors then depend on the
CPU (0.3 apart, measured). So the weights are quantized to 7 bits
(``reduce_range``: -64 to 64): a pair is then at most 2 x 255 x 64 = 32,640,
which fits, every path computes the same integers, and a CPU without VNNI
gives the vectors one with VNNI gives (checked under QEMU's AVX2-only
emulation, tests/test_quantization.py, which also checks those ranges in the
file). Depthwise convolutions widen each product to 32 bits on every path
and would not need it; one rule for all the weights keeps the proof short
and cost no recall on the DreamBooth benchmarks (BENCHMARKS.md).

The result depends on the weights, those photos, this recipe and perhaps the
onnxruntime version that calibrates (two runs with one made byte-identical
files). The file is named by the weights and :data:`RECIPE` and made once, so
a store's vectors and the queries against it come from the same file even
after onnxruntime is upgraded; the store records the file's digest, and a
process whose file differs refuses to add vectors (``rap reembed``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rap._imports import require

if TYPE_CHECKING:
    import torch

EXTRA = "offline"
"""The extra that installs onnxruntime and onnx."""
RECIPE = "int8w7"
"""Names the quantization (int8 with 7-bit weights): part of the quantized file's name, so that
a file made by another recipe is never taken for this one's."""
WEIGHT_RANGE = (-64, 64)
"""The integer range of every quantized weight: ``reduce_range`` int8, so that two products of a
uint8 activation and a weight fit a signed 16-bit sum (2 x 255 x 64 = 32,640 <= 32,767)."""


def available() -> bool:
    """Whether onnxruntime (to run) and onnx (to export) are installed."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def export(model: torch.nn.Module, torch: Any, path: Path, example: torch.Tensor) -> None:
    """Export ``model`` (input ``pixels``, batch dimension free) to ``path`` unless it is there."""
    if path.exists():
        return
    require("onnx", EXTRA)
    with _written_whole(path) as partial, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            model, (example,), str(partial), input_names=["pixels"], output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}}, dynamo=False,
        )


def quantize(source: Path, path: Path, calibration: Callable[[], Iterable[np.ndarray]]) -> None:
    """Quantize the float model ``source`` to int8 at ``path`` unless it is there; ``calibration``
    gives the batches of ``pixels`` whose activation ranges set the scales."""
    if path.exists():
        return
    quantization = require("onnxruntime.quantization", EXTRA)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx = require("onnx", EXTRA)
    with _written_whole(path) as partial:
        prepared = partial.with_name(f"{partial.name}.pre")  # shapes inferred, as quantization wants
        # the calibration's progress notes go to stdout, which --json output owns
        try:
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(source), str(prepared))
                convolutions = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
                quantization.quantize_static(
                    str(prepared), str(partial), _reader(quantization.CalibrationDataReader, calibration()),
                    quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                    activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
                    reduce_range=True,  # 7-bit weights: see the module docstring
                    nodes_to_exclude=[convolutions[0], convolutions[-1]],
                )
        finally:
            prepared.unlink(missing_ok=True)


def digest(path: Path) -> str:
    """The sha256 of a model file, which a store records beside the vectors the file made."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def session(path: Path) -> Any:
    """A single-threaded session on the CPU with every graph optimisation: several
    threads may run it at once, each on its own share of a batch."""
    ort = require("onnxruntime", EXTRA)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _reader(base: type, batches: Iterable[np.ndarray]) -> Any:
    """The calibration reader ONNX Runtime asks for (a subclass of ``base``), over ``batches``."""

    class Batches(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"pixels": batch}

    return Batches()


@contextlib.contextmanager
def _written_whole(path: Path) -> Iterator[Path]:
    """A temporary name to write ``path`` under, renamed to it only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        if partial.exists():
            os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)

"""The int8 encoder gives one vector per image on every CPU: its integer sums cannot saturate.

ONNX Runtime's uint8 x int8 convolutions sum pairs of products in a signed
16-bit lane on x86 CPUs without VNNI (``vpmaddubsw``), and in 32 bits
elsewhere; the model is made so that no pair can pass 32,767
(:mod:`rap.encoders.onnx_runtime`). The first test checks that property in the
file itself, the second runs the model on an emulated CPU that has AVX2 but
neither AVX-512 nor VNNI, as machines people have do.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from rap.encoders import onnx_runtime  # noqa: E402
from rap.encoders.efficientnet import EfficientNetEncoder, _batch  # noqa: E402
from rap.images import crop, load_image  # noqa: E402

PHOTOS = Path(__file__).parent / "photos"
INT16_MAX = 32767
UINT8_MAX = 255


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> EfficientNetEncoder:
    return EfficientNetEncoder("efficientnet-lite0-int8", cache=tmp_path_factory.mktemp("cache"))


@pytest.mark.slow
def test_no_two_products_of_the_int8_model_can_pass_a_16_bit_sum(int8: EfficientNetEncoder) -> None:
    """Every quantized convolution multiplies uint8 activations (0 to 255) by symmetric int8
    weights within WEIGHT_RANGE, so a pair of products is at most 2 x 255 x 64 = 32,640."""
    graph = onnx.load(str(int8.model_file)).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    dequantized = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}
    low, high = onnx_runtime.WEIGHT_RANGE
    quantized = 0
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        weight_node = dequantized.get(conv.input[1])
        if weight_node is None:  # a float convolution (the first and the last)
            continue
        quantized += 1
        weights, zero_point = initializers[weight_node.input[0]], initializers[weight_node.input[2]]
        assert weights.dtype == np.int8 and not zero_point.any(), conv.name
        assert low <= weights.min() and weights.max() <= high, (conv.name, weights.min(), weights.max())
        activation = initializers[dequantized[conv.input[0]].input[2]]
        assert activation.dtype == np.uint8, conv.name
    assert quantized >= 40  # all but the first and last of EfficientNet-Lite0's 49
    # every int8 tensor is a convolution's weights: no other integer product runs
    int8_tensors = {name for name, value in initializers.items() if value.dtype == np.int8}
    feeding_convs = {dequantized[conv.input[1]].input[0] for conv in graph.node if conv.op_type == "Conv" and conv.input[1] in dequantized}
    assert {name for name in int8_tensors if not name.endswith("zero_point")} == feeding_convs
    assert 2 * UINT8_MAX * max(-low, high) <= INT16_MAX


EMULATED = """
import sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as cpu
assert cpu["AVX2"] and not cpu["AVX512F"] and not cpu["AVX512_CLX"], "the emulated CPU must have AVX2 and no AVX-512/VNNI"
from rap.encoders import onnx_runtime
model, pixels, out = sys.argv[1:]
np.save(out, onnx_runtime.session(model).run(None, {"pixels": np.load(pixels)})[0])
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU with the host's x86-64 Python")
def test_int8_vectors_on_an_avx2_cpu_without_vnni_equal_these(int8: EfficientNetEncoder, tmp_path: Path) -> None:
    """QEMU's user-mode emulation of a Haswell (AVX2, FMA; no AVX-512, no VNNI) makes ONNX Runtime
    take its AVX2 kernels, the ones that saturate; the vectors must equal this machine's."""
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "needs QEMU user-mode emulation to run an AVX2-only CPU: apt-get install qemu-user"
    image = load_image(PHOTOS / "dog_00.jpg").image
    crops = [image, crop(image, (0, 0, image.width // 2, image.height // 2)), crop(image, (image.width // 3, 0, image.width, image.height))]
    np.save(tmp_path / "pixels.npy", _batch(crops))
    here = onnx_runtime.session(int8.model_file).run(None, {"pixels": np.load(tmp_path / "pixels.npy")})[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, "-c", EMULATED, str(int8.model_file), str(tmp_path / "pixels.npy"), str(tmp_path / "out.npy")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    emulated = np.load(tmp_path / "out.npy")
    unit = lambda rows: rows / np.linalg.norm(rows, axis=1, keepdims=True)  # noqa: E731
    assert float(np.linalg.norm(unit(here) - unit(emulated), axis=1).max()) <= 1e-3

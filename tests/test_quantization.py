"""8-bit and 4-bit loading of the transformers backends: refused in one line without CUDA, used with it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402

from rap.cli import run  # noqa: E402
from rap.errors import ConfigError, InvalidInput  # noqa: E402
from rap.generation import GenerationOptions, create_generator, user_turn  # noqa: E402
from support.random_models import save_random_llava, save_random_qwen2_vl  # noqa: E402

CUDA = torch.cuda.is_available()


@pytest.mark.skipif(CUDA, reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("backend", ["llava", "qwen2-vl"])
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantization_without_cuda_is_one_line_before_any_loading(backend, bits):
    # a folder that does not exist: the refusal must come before anything is read
    with pytest.raises(ConfigError, match=f"quantize={bits} needs a CUDA device") as caught:
        create_generator(f"{backend}:/nowhere/model", quantize=bits)
    assert "\n" not in str(caught.value)


def test_quantization_on_the_cpu_device_is_refused_and_bad_values_too():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        create_generator("llava:/nowhere/model", quantize="4bit", device="cpu")
    with pytest.raises(InvalidInput, match="llava option quantize"):
        create_generator("llava:/nowhere/model", quantize="3bit")


@pytest.mark.skipif(CUDA, reason="the refusal is for machines without CUDA")
def test_cli_refuses_quantization_in_one_line(capsys, tmp_path, monkeypatch, photos):
    flags = ["--db", str(tmp_path / "db"), "--encoder", "tiny", "--faces", "none"]
    assert run([*flags, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("RAP_GENERATOR_OPTIONS", json.dumps({"quantize": "4bit"}))
    code = run([*flags, "ask", "hi", "--backend", "llava:/nowhere/model"])
    err = capsys.readouterr().err
    assert code == 6 and "needs a CUDA device" in err and err.count("\n") == 1


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["llava", "qwen2-vl"])
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_tiny_models_answer_on_cuda(tmp_path, photos, backend, bits):
    pytest.importorskip("bitsandbytes")
    folder = save_random_llava(tmp_path / "m") if backend == "llava" else save_random_qwen2_vl(tmp_path / "m")
    generator = create_generator(f"{backend}:{folder}", quantize=bits)
    layers = {type(module).__name__ for module in generator._model.modules()}
    assert {"Linear8bitLt", "Linear4bit"} & layers
    from PIL import Image

    reply = generator.generate([user_turn("What is this?", Image.open(photos / "dog_00.jpg"))], GenerationOptions(max_new_tokens=4))
    assert isinstance(reply, str)

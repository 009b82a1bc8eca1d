"""Region detectors: model-free proposals on real photos, and the open-vocabulary
detectors on tiny random OWLv2 and Grounding DINO models built in the test."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from rap.detectors import DETECTORS, Region, create_detector
from rap.detectors.proposals import iou, pixel_box, select_distinct
from rap.errors import ConfigError, InvalidInput

try:
    import cv2

    HAS_CONTRIB = hasattr(cv2, "ximgproc")
except ImportError:
    HAS_CONTRIB = False
needs_contrib = pytest.mark.skipif(not HAS_CONTRIB, reason="needs opencv-contrib (rap-mllm[offline])")


def photo(photos: Path, name: str) -> Image.Image:
    with Image.open(photos / name) as image:
        return image.convert("RGB")


def wide(photos: Path) -> Image.Image:
    """A non-square image (256x128), to catch boxes scaled on the wrong axis."""
    return photo(photos, "cat_00.jpg").crop((0, 64, 256, 192))


def assert_valid(regions: list[Region], image: Image.Image, cap: int = 10) -> None:
    width, height = image.size
    assert len(regions) <= cap
    for region in regions:
        x0, y0, x1, y1 = region.box
        assert all(isinstance(v, int) for v in region.box)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, region
        assert region.source == "detector"


def assert_proposals(regions: list[Region], image: Image.Image) -> None:
    assert_valid(regions, image)
    assert regions, "no proposals at all"
    assert len({r.box for r in regions}) == len(regions)
    assert (0, 0, *image.size) not in {r.box for r in regions}, "the retriever adds the whole image"
    assert all(r.label is None and r.score is None for r in regions)


def test_registry_knows_every_detector() -> None:
    assert {"multiscale", "selective-search", "none", "owlv2", "grounding-dino"} <= set(DETECTORS.names())
    assert DETECTORS.canonical("multiscale") == "multiscale:0.75,0.5"
    assert DETECTORS.canonical("selective-search") == "selective-search:10"
    assert DETECTORS.canonical("owlv2") == "owlv2:google/owlv2-base-patch16-ensemble"
    assert DETECTORS.canonical("grounding-dino") == "grounding-dino:IDEA-Research/grounding-dino-tiny"


def test_none_proposes_nothing(photos: Path) -> None:
    image = photo(photos, "dog_00.jpg")
    assert create_detector("none").detect([image, image], ["dog"]) == [[], []]
    with pytest.raises(InvalidInput):
        create_detector("none:5")


# --- box helpers -----------------------------------------------------------


def test_iou_and_greedy_suppression() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    boxes = [(0, 0, 10, 10), (1, 0, 11, 10), (20, 20, 30, 30), (40, 40, 50, 50)]
    assert select_distinct(boxes, 0.5, limit=10) == [0, 2, 3]
    assert select_distinct(boxes, 0.5, limit=2) == [0, 2]
    assert select_distinct(boxes, 0.5, limit=10, exclude=[(20, 20, 31, 30)]) == [0, 3]


def test_pixel_box_rounds_outwards_and_clips() -> None:
    assert pixel_box((-3.2, 1.5, 20.1, 300.0), (100, 50)) == (0, 1, 21, 50)
    assert pixel_box((10.0, 10.0, 12.0, 40.0), (100, 50)) is None  # 2 px wide


# --- multiscale -------------------------------------------------------------


@pytest.mark.parametrize("name", ["dog_00.jpg", "teapot_01.jpg"])
def test_multiscale_crops_a_photo(photos: Path, name: str) -> None:
    image = photo(photos, name)
    detector = create_detector("multiscale")
    [regions] = detector.detect([image], [])
    assert_proposals(regions, image)
    assert len(regions) == 6  # a centred crop per scale, the four corners at 1/2
    assert regions[0].box == (32, 32, 224, 224)  # the centred 3/4 crop comes first
    assert [r.box for r in regions[1:]] == [(64, 64, 192, 192), (0, 0, 128, 128), (128, 0, 256, 128), (0, 128, 128, 256), (128, 128, 256, 256)]
    assert detector.detect([image], ["dog"]) == [regions]


def test_multiscale_follows_a_wide_image(photos: Path) -> None:
    image = wide(photos)
    [regions] = create_detector("multiscale:0.5").detect([image], [])
    assert_proposals(regions, image)
    assert [r.box for r in regions] == [
        (64, 32, 192, 96),
        (0, 0, 128, 64),
        (128, 0, 256, 64),
        (0, 64, 128, 128),
        (128, 64, 256, 128),
    ]


def test_multiscale_skips_crops_too_small_to_embed() -> None:
    image = Image.new("RGB", (12, 12))
    [regions] = create_detector("multiscale").detect([image], [])
    assert [r.box for r in regions] == [(2, 2, 11, 11)]  # the 3/4 crop alone: the 1/2 ones would be 6 px


def test_multiscale_id_records_its_scales() -> None:
    assert create_detector("multiscale:0.6,0.4").id == "multiscale:0.6,0.4"


@pytest.mark.parametrize(
    "spec", ["multiscale:0", "multiscale:1", "multiscale:big", "multiscale:0.5,", "multiscale:0.9,0.8,0.7,0.6"]
)
def test_multiscale_rejects_bad_scales(spec: str) -> None:
    with pytest.raises(InvalidInput):
        create_detector(spec)


# --- selective search --------------------------------------------------------


@needs_contrib
@pytest.mark.parametrize("name", ["dog_01.jpg", "clock_00.jpg"])
def test_selective_search_keeps_large_distinct_boxes(photos: Path, name: str) -> None:
    image = photo(photos, name)
    detector = create_detector("selective-search")
    [regions] = detector.detect([image], [])
    assert_proposals(regions, image)
    boxes = [r.box for r in regions]
    areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes]
    assert areas == sorted(areas, reverse=True)
    assert min(areas) >= 0.05 * image.width * image.height
    assert all(iou(a, b) <= 0.7 for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert all(iou(box, (0, 0, *image.size)) <= 0.7 for box in boxes)
    assert create_detector("selective-search").detect([image], []) == [regions]  # deterministic


@needs_contrib
def test_selective_search_maps_boxes_back_from_its_downscaled_copy(photos: Path) -> None:
    image = wide(photos).resize((640, 320))
    [regions] = create_detector("selective-search:3").detect([image], [])
    assert_proposals(regions, image)
    assert len(regions) <= 3
    assert max(r.box[2] for r in regions) > 320  # boxes span the full width, not the 192 px copy


@pytest.mark.parametrize(
    "spec", ["selective-search:0", "selective-search:ten", "selective-search:-1", "selective-search:1000"]
)
def test_selective_search_rejects_bad_counts(spec: str) -> None:
    with pytest.raises(InvalidInput):
        create_detector(spec)


# --- open-vocabulary detectors on tiny random models -------------------------


@pytest.fixture(scope="module")
def tiny_owlv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random OWLv2 (64 px input, 16 patches) with a letter-level CLIP tokenizer."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("owlv2")
    vocab: dict[str, int] = {}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[f"{letter}</w>"] = len(vocab)
    # Special tokens last, as in CLIP: OWL treats a query starting with id 0 as padding.
    start, end = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": start, "<|endoftext|>": end})
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = transformers.Owlv2Config(
        text_config=dict(
            small,
            vocab_size=len(vocab),
            max_position_embeddings=16,
            bos_token_id=start,
            eos_token_id=end,
            pad_token_id=end,
        ),
        vision_config=dict(small, image_size=64, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = transformers.Owlv2ForObjectDetection(config)
    with torch.no_grad():  # boxes at the patch-grid prior, not saturated random ones
        model.box_head.dense2.weight.zero_()
    model.save_pretrained(folder)
    image_processor = transformers.Owlv2ImageProcessorPil(size={"height": 64, "width": 64})
    transformers.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_grounding_dino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Grounding DINO (tiny Swin and BERT, 10 queries) with a word-level BERT tokenizer."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    folder = tmp_path_factory.mktemp("grounding-dino")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "dog", "cat", "teddy", "bear"]
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    config = transformers.GroundingDinoConfig(
        backbone_config=transformers.SwinConfig(
            image_size=64,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 1],
            window_size=4,
            out_features=["stage1", "stage2"],
        ),
        text_config=transformers.BertConfig(
            vocab_size=len(words),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        num_queries=10,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # one layer breaks transformers' weight tying of the box heads
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_feature_levels=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    torch.manual_seed(0)
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    processor = transformers.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


class StubModel:
    """Stands in for a loaded model: returns fixed logits and boxes for one image."""

    def __init__(self, logits: list[list[float]], boxes: list[list[float]]) -> None:
        import torch

        self.output = SimpleNamespace(logits=torch.tensor([logits]), pred_boxes=torch.tensor([boxes]))

    def __call__(self, **inputs: object) -> SimpleNamespace:
        return self.output


@pytest.mark.parametrize("scheme", ["owlv2", "grounding-dino"])
def test_open_vocabulary_detects_categories_in_a_batch(
    scheme: str, tiny_owlv2: Path, tiny_grounding_dino: Path, photos: Path
) -> None:
    folder = tiny_owlv2 if scheme == "owlv2" else tiny_grounding_dino
    detector = create_detector(f"{scheme}:{folder}@0")
    assert detector.id == f"{scheme}:{folder}@0"
    images = [photo(photos, "dog_00.jpg"), wide(photos)]
    results = detector.detect(images, ["Dog", "cat"])
    assert len(results) == 2
    for regions, image in zip(results, images):
        assert_valid(regions, image)
        assert regions, "threshold 0 keeps every box"
        assert {r.label for r in regions} <= {"Dog", "cat"}  # labels as the caller spelled them
        scores = [r.score for r in regions]
        assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("scheme", ["owlv2", "grounding-dino"])
def test_open_vocabulary_without_categories_skips_the_model(
    scheme: str, tiny_owlv2: Path, tiny_grounding_dino: Path, photos: Path
) -> None:
    detector = create_detector(f"{scheme}:{tiny_owlv2 if scheme == 'owlv2' else tiny_grounding_dino}")
    detector.model = None  # calling it would fail
    image = photo(photos, "dog_00.jpg")
    assert detector.detect([image, image], []) == [[], []]
    assert detector.detect([image], [" . "]) == [[]]
    assert detector.detect([], ["dog"]) == []


def test_owlv2_boxes_map_through_the_square_padding(tiny_owlv2: Path, photos: Path) -> None:
    detector = create_detector(f"owlv2:{tiny_owlv2}")  # default threshold 0.1
    # OWLv2 sees the 256x128 image padded to 256x256: its top half is the image.
    detector.model = StubModel(
        logits=[[3.0, -5.0], [-5.0, 0.5], [0.0, -5.0], [-3.0, -5.0]],  # dog, cat, dog, nothing
        boxes=[[0.5, 0.25, 1.0, 0.5], [0.5, 0.25, 1.0, 0.5], [0.5, 0.26, 1.0, 0.5], [0.2, 0.2, 0.2, 0.2]],
    )
    [regions] = detector.detect([wide(photos)], ["dog", "cat"])
    assert [(r.box, r.label) for r in regions] == [((0, 0, 256, 128), "dog"), ((0, 0, 256, 128), "cat")]
    assert regions[0].score == pytest.approx(0.9526, abs=1e-4)  # the overlapping dog (0.5) was suppressed


def test_grounding_dino_scores_a_category_by_its_own_tokens(tiny_grounding_dino: Path, photos: Path) -> None:
    detector = create_detector(f"grounding-dino:{tiny_grounding_dino}")  # default threshold 0.3
    # Prompt "dog. teddy bear." tokenizes to [CLS] dog . teddy bear . [SEP]
    logits = [[-9.0] * 32 for _ in range(3)]
    logits[0][4] = 2.0  # "bear"
    logits[1][1] = 1.0  # "dog"
    logits[2][2] = 5.0  # a period: no category
    detector.model = StubModel(
        logits=logits, boxes=[[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.5]]
    )
    [regions] = detector.detect([wide(photos)], ["dog", "Teddy Bear."])
    # boxes are relative to the image itself, not to a padded square
    assert [(r.box, r.label) for r in regions] == [
        ((0, 0, 256, 128), "Teddy Bear."),
        ((0, 0, 128, 128), "dog"),
    ]
    assert [r.score for r in regions] == pytest.approx([0.8808, 0.7311], abs=1e-4)


def test_open_vocabulary_refuses_a_model_of_the_other_family(tiny_grounding_dino: Path) -> None:
    with pytest.raises(ConfigError, match="grounding-dino model"):
        create_detector(f"owlv2:{tiny_grounding_dino}")


def test_open_vocabulary_reports_a_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="cannot load"):
        create_detector(f"owlv2:{tmp_path / 'missing'}")


@pytest.mark.parametrize(
    "spec", ["owlv2:somewhere@high", "owlv2:@1.5", "grounding-dino:@-0.1", "grounding-dino:@nan"]
)
def test_open_vocabulary_rejects_bad_thresholds(spec: str) -> None:
    with pytest.raises(InvalidInput):
        create_detector(spec)

"""The ``qwen2-vl`` backend on tiny random Qwen2-VL and Qwen2.5-VL checkpoints (tests/support/random_models.py).

No Qwen weights can be downloaded where rap is built, so each family is built
from a small config with random weights, next to a byte-level tokenizer that
holds Qwen's special tokens, Qwen's image processor with a small pixel budget
and a ChatML chat template saved as the processor's ``chat_template.json``, as
the published checkpoints ship it. The replies are noise; what is checked is
the prompt, the images' token budgets, decoding and the feature cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from rap.errors import ConfigError, InvalidInput  # noqa: E402
from rap.generation import GenerationOptions, PromptConcept, Turn, create_generator, user_turn  # noqa: E402
from support.random_models import save_random_qwen2_vl  # noqa: E402

PHOTOS = Path(__file__).parent / "photos"
QUERY_PIXELS = 16 * 28 * 28  # the processor's own budget: a 256x256 photo becomes 8x8 patches, 16 tokens
CONCEPT_PIXELS = 4 * 28 * 28  # the smallest concept budget: 4 tokens at most


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_qwen2_vl(tmp_path_factory.mktemp(request.param), request.param, QUERY_PIXELS)


@pytest.fixture(scope="module")
def generator(checkpoint: Path):
    return create_generator(f"qwen2-vl:{checkpoint}", concept_max_pixels=CONCEPT_PIXELS)


def photo(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
    return image.resize(size) if size else image


def question(query: str = "dog_00") -> Turn:
    """A photo and two concepts whose images differ in shape, so their order shows in their grids."""
    concepts = [
        PromptConcept("<bo>", "a Shiba Inu", photo("cat_00", (256, 128)), "key-bo"),
        PromptConcept("<kit>", "a ginger cat", photo("teapot_00", (128, 256)), "key-kit"),
    ]
    return user_turn("What is <bo> doing?", photo(query), concepts)


def rendered(generator, conversation) -> str:
    inputs = generator._inputs(conversation)
    return generator._tokenizer.decode(inputs["input_ids"][0])


def test_prompt_has_photo_first_then_concepts_each_at_its_own_budget(generator) -> None:
    inputs = generator._inputs([question()])
    grids = inputs["image_grid_thw"].tolist()
    assert grids == [[1, 8, 8], [1, 2, 4], [1, 4, 2]]  # photo 16 tokens; wide, then tall concept, 2 each
    pad = "<|image_pad|>"
    assert rendered(generator, [question()]) == (
        f"<|im_start|>user\n<|vision_start|>{pad * 16}<|vision_end|>\n"
        f"[1.<|vision_start|>{pad * 2}<|vision_end|>\n Name: <bo>, Info: a Shiba Inu\n"
        f"2.<|vision_start|>{pad * 2}<|vision_end|>\n Name: <kit>, Info: a ginger cat\n"
        "]What is <bo> doing?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert int(inputs["mm_token_type_ids"].sum()) == 20


def test_concept_budget_follows_option(checkpoint: Path) -> None:
    roomy = create_generator(f"qwen2-vl:{checkpoint}", concept_max_pixels=QUERY_PIXELS)
    tokens = [g[1] * g[2] // 4 for g in roomy._inputs([question()])["image_grid_thw"].tolist()]
    assert tokens[0] == 16 and all(2 < n <= 16 for n in tokens[1:])


def test_second_turn_renders_as_multi_turn_chat(generator) -> None:
    first = question()
    first.reply = "It is asleep."
    conversation = [first, Turn(["And <kit>?"])]
    text = rendered(generator, conversation)
    assert text.count("<|im_start|>user\n") == 2
    assert text.endswith(
        "]What is <bo> doing?<|im_end|>\n<|im_start|>assistant\nIt is asleep.<|im_end|>\n"
        "<|im_start|>user\nAnd <kit>?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert generator.generate(conversation, GenerationOptions(max_new_tokens=3)) is not None


def test_generation_honours_max_new_tokens_and_streams_the_same_text(generator, monkeypatch) -> None:
    lengths: list[int] = []
    real = generator._model.generate

    def counting(**kwargs):
        out = real(**kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(generator._model, "generate", counting)
    options = GenerationOptions(max_new_tokens=6)
    text = generator.generate([question()], options)
    pieces = list(generator.stream([question()], options))
    assert "".join(pieces) == text and text
    assert lengths == [6, 6]  # the random model never says <|im_end|> in 6 tokens


def test_static_cache_decodes_what_the_dynamic_cache_decodes(checkpoint: Path, generator) -> None:
    """Qwen's M-RoPE offsets, computed at prefill, carry over to a static cache's decoding steps."""
    static = create_generator(f"qwen2-vl:{checkpoint}", concept_max_pixels=CONCEPT_PIXELS, static_cache=True)
    options = GenerationOptions(max_new_tokens=8)
    second = [Turn(question().parts, reply="A dog."), user_turn("And <kit>?", None, [])]
    for conversation in ([question()], second):
        assert static.generate(conversation, options) == generator.generate(conversation, options)


@pytest.mark.slow
def test_compiled_decoding_step_decodes_what_eager_decodes(checkpoint: Path, generator) -> None:
    """``compile`` with M-RoPE: the compiled step carries the prefill's position offsets on.

    transformers compiles only on accelerators; its private switch lets this
    run the same path on the CPU.
    """
    from transformers import CompileConfig

    compiled = create_generator(f"qwen2-vl:{checkpoint}", concept_max_pixels=CONCEPT_PIXELS, compile=True)
    everywhere = CompileConfig()
    everywhere._compile_all_devices = True
    compiled._model.generation_config.compile_config = everywhere
    options = GenerationOptions(max_new_tokens=8)
    expected = generator.generate([question()], options)
    assert compiled.generate([question()], options) == expected
    assert compiled.generate([question()], options) == expected
    assert compiled._model._compiled_call is not None


def test_text_only_question_and_sampling(generator) -> None:
    turn = user_turn("Who is <bo>?", None, [PromptConcept("<bo>", "a Shiba Inu")])
    assert "image_grid_thw" not in generator._inputs([turn])
    options = GenerationOptions(max_new_tokens=5, temperature=1.0, seed=3)
    assert generator.generate([turn], options) == generator.generate([turn], options)
    seeds = {generator.generate([turn], options.model_copy(update={"seed": seed})) for seed in range(4)}
    assert len(seeds) > 1  # Qwen's top_k=1 would make every seed give the greedy reply


def test_cached_concept_features_give_the_same_logits_and_tokens(checkpoint: Path, monkeypatch) -> None:
    plain = create_generator(f"qwen2-vl:{checkpoint}", concept_max_pixels=CONCEPT_PIXELS, concept_cache_size=0)
    cached = create_generator(f"qwen2-vl:{checkpoint}", concept_max_pixels=CONCEPT_PIXELS)
    model = plain._model
    encoded: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = model.get_image_features
    monkeypatch.setattr(model, "get_image_features", lambda p, g: encoded.append((p, g)) or real(p, g))

    # the stock path: every image's pixels handed to the model, which encodes them together
    reference = plain._inputs([question()])
    del reference["mm_encoder_outputs"]
    reference["pixel_values"], grids = encoded[0]
    assert torch.equal(grids, reference["image_grid_thw"])

    cached._inputs([question("dog_01")])  # the concepts' features come from a batch with another photo
    counted: list[int] = []
    real_cached = cached._model.get_image_features
    monkeypatch.setattr(cached._model, "get_image_features", lambda p, g: counted.append(len(g)) or real_cached(p, g))
    reuse = cached._inputs([question()])
    assert counted == [1]  # only the photo was encoded

    for name in ("input_ids", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(reuse[name], reference[name])
    with torch.inference_mode():
        want = model(**reference).logits
        got = model(**reuse).logits
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
        greedy = dict(max_new_tokens=8, do_sample=False, temperature=None, top_p=None, top_k=None)
        assert torch.equal(model.generate(**reuse, **greedy), model.generate(**reference, **greedy))
    assert cached.generate([question()]) == plain.generate([question()])


def test_images_and_text_it_cannot_take(generator) -> None:
    with pytest.raises(InvalidInput, match="cannot take this image"):
        generator.generate([user_turn("What is this?", Image.new("RGB", (600, 2)), [])])
    with pytest.raises(InvalidInput, match="image_pad"):
        generator.generate([user_turn("Say <|image_pad|>", None, [])])


def test_unloadable_models_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        create_generator(f"qwen2-vl:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ConfigError, match="not Qwen2-VL"):
        create_generator(f"qwen2-vl:{tmp_path}")
    with pytest.raises(InvalidInput, match="concept_max_pixels"):
        create_generator(f"qwen2-vl:{tmp_path}", concept_max_pixels=10)
    with pytest.raises(InvalidInput, match="colour"):
        create_generator(f"qwen2-vl:{tmp_path}", colour="red")

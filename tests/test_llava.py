"""The llava backend and the LLaVA checkpoint converter, on tiny random models built here.

No weights are downloaded: a tiny Llama + CLIP LLaVA is made from configs,
saved as transformers would save it, and loaded back through the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("transformers")
import torch  # noqa: E402
import transformers  # noqa: E402

from rap.errors import ConfigError, InvalidInput  # noqa: E402
from rap.generation import GenerationOptions, PromptConcept, Turn, create_generator, user_turn  # noqa: E402
from rap.generation.llava_convert import LLAVA_V1_CHAT_TEMPLATE, V1_SYSTEM, convert_llava_checkpoint  # noqa: E402
from rap.generation.vision_cache import FeatureCache  # noqa: E402
from support.random_models import BYTE_VOCAB, byte_tokenizer  # noqa: E402

PHOTOS = Path(__file__).parent / "photos"
BASE_VOCAB = BYTE_VOCAB
IMAGE_TOKENS = 25  # (30 / 6) ** 2 patches per image
OPTIONS = GenerationOptions(max_new_tokens=6)


def text_config(vocab_size: int) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip


def vision_config() -> transformers.CLIPVisionConfig:
    return transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=30, patch_size=6
    )


def clip_processor() -> transformers.CLIPImageProcessorPil:
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LLaVA in the llava-hf format, with processor and LLaVA's v1 chat template."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llava")
    config = transformers.LlavaConfig(
        vision_config=vision_config(), text_config=text_config(BASE_VOCAB + 1),
        image_token_index=BASE_VOCAB, image_seq_length=IMAGE_TOKENS,
    )  # fmt: skip
    transformers.LlavaForConditionalGeneration(config).save_pretrained(folder)
    transformers.LlavaProcessor(
        image_processor=clip_processor(), tokenizer=byte_tokenizer(image_token=True), patch_size=6,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_V1_CHAT_TEMPLATE,
    ).save_pretrained(folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def generator(tiny_llava: Path):
    return create_generator(f"llava:{tiny_llava}", device="cpu")


def concepts() -> list[PromptConcept]:
    return [
        PromptConcept("<bo>", "a dog", image=Image.open(PHOTOS / "dog_01.jpg"), image_key="key-bo"),
        PromptConcept("<kit>", "a cat", image=Image.open(PHOTOS / "cat_00.jpg"), image_key="key-kit"),
    ]


def question() -> Turn:
    return user_turn("What is <bo> doing?", Image.open(PHOTOS / "dog_00.jpg"), concepts())


FIRST_PROMPT = (
    f"{V1_SYSTEM} USER: <image>\n[1.<image>\n Name: <bo>, Info: a dog\n2.<image>\n Name: <kit>, Info: a cat\n]"
    "What is <bo> doing? ASSISTANT:"
)


# -- the prompt ------------------------------------------------------------------------


def test_prompt_puts_query_image_first_then_concepts_in_order(generator) -> None:
    conversation = [question()]
    assert generator.render(conversation) == FIRST_PROMPT

    batch, keys = generator._inputs(conversation)
    assert keys == [None, "key-bo", "key-kit"]
    image_processor = generator._processor.image_processor
    for n, name in enumerate(["dog_00", "dog_01", "cat_00"]):
        alone = image_processor(Image.open(PHOTOS / f"{name}.jpg"), return_tensors="pt")["pixel_values"][0]
        assert torch.equal(batch["pixel_values"][n], alone)
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == 1  # <s>, once
    assert ids.count(1) == 1
    assert ids.count(BASE_VOCAB) == 3 * IMAGE_TOKENS
    runs = "".join("I" if token == BASE_VOCAB else "t" for token in ids).split("t")
    assert [len(run) for run in runs if run] == [IMAGE_TOKENS] * 3


def test_history_renders_as_a_multi_turn_chat(generator) -> None:
    first = question()
    first.reply = "It sleeps."
    conversation = [first, Turn(["And now?"])]
    assert generator.render(conversation) == FIRST_PROMPT + " It sleeps.</s>USER: And now? ASSISTANT:"
    assert isinstance(generator.generate(conversation, OPTIONS), str)


def test_text_only_question(generator) -> None:
    conversation = [user_turn("Who is <bo>?", None, [PromptConcept("<bo>", "a dog")])]
    expected = f"{V1_SYSTEM} USER: [1.\n Name: <bo>, Info: a dog\n]Who is <bo>? ASSISTANT:"
    assert generator.render(conversation) == expected
    assert isinstance(generator.generate(conversation, OPTIONS), str)


# -- generation ------------------------------------------------------------------------


def test_stream_pieces_join_to_the_generated_reply(generator) -> None:
    pieces = list(generator.stream([question()], OPTIONS))
    assert pieces and all(pieces)
    assert "".join(pieces) == generator.generate([question()], OPTIONS)


def test_sampling_is_seeded(generator) -> None:
    sampled = GenerationOptions(max_new_tokens=6, temperature=1.0, seed=3)
    assert generator.generate([question()], sampled) == generator.generate([question()], sampled)


def test_cached_features_give_what_pixel_values_give(tiny_llava: Path) -> None:
    generator = create_generator(f"llava:{tiny_llava}", device="cpu")
    model = generator._model
    conversation = [question()]
    batch, keys = generator._inputs(conversation)
    with torch.inference_mode():
        plain_logits = model(**batch).logits
        plain_tokens = model.generate(**batch, max_new_tokens=6, do_sample=False)[0, batch["input_ids"].shape[1] :]

    assert generator.prepare_concepts({c.image_key: c.image for c in concepts()}) == 2
    assert generator.prepare_concepts({c.image_key: c.image for c in concepts()}) == 0
    encoded: list[int] = []
    encode = generator._encode
    generator._encode = lambda pixels: encoded.append(len(pixels)) or encode(pixels)
    embeds = generator._embeddings(batch, keys)
    assert encoded == [1]  # only the query image went through the vision tower
    with torch.inference_mode():
        cached_logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        cached_tokens = model.generate(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], max_new_tokens=6, do_sample=False
        )[0]
    assert torch.allclose(cached_logits, plain_logits, atol=1e-5)
    assert cached_tokens.tolist() == plain_tokens.tolist()
    reply = generator.generate(conversation, OPTIONS)
    assert reply == generator._processor.tokenizer.decode(plain_tokens, skip_special_tokens=True)


def test_feature_cache_forgets_the_least_recently_used() -> None:
    cache: FeatureCache[int] = FeatureCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now b is the oldest
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    off: FeatureCache[int] = FeatureCache(0)
    off.put("a", 1)
    assert len(off) == 0


# -- refusals --------------------------------------------------------------------------


def test_empty_question_is_invalid(generator) -> None:
    with pytest.raises(InvalidInput):
        generator.generate([user_turn("", None, [])])


def test_an_image_token_typed_in_the_question_is_invalid(generator) -> None:
    with pytest.raises(InvalidInput, match="stands for an image"):
        generator.generate([user_turn("What is in <image>?", None, [])])


def test_an_image_the_model_cannot_take_is_invalid(generator) -> None:
    with pytest.raises(InvalidInput, match="cannot take"):
        generator.generate([user_turn("What is this?", Image.new("RGB", (0, 0)), [])])
    with pytest.raises(InvalidInput, match="cannot take"):
        generator.prepare_concepts({"empty": Image.new("RGB", (0, 0))})


def test_unknown_option_is_invalid(tiny_llava: Path) -> None:
    with pytest.raises(InvalidInput, match="llava option"):
        create_generator(f"llava:{tiny_llava}", temperature=0.5)


def test_unloadable_folders_are_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read once, at import
    with pytest.raises(ConfigError, match="no config.json"):
        create_generator(f"llava:{tmp_path}")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError):
        create_generator(f"llava:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_vision_tower": "x"}))
    with pytest.raises(ConfigError, match="convert it first"):
        create_generator(f"llava:{tmp_path}")
    with pytest.raises(ConfigError):
        create_generator("llava:nobody/no-such-model")


def test_a_folder_without_chat_template_is_a_config_error(tmp_path: Path, tiny_llava: Path) -> None:
    for file in tiny_llava.iterdir():
        if file.name != "chat_template.jinja":
            (tmp_path / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ConfigError, match="no chat template"):
        create_generator(f"llava:{tmp_path}", device="cpu")


# -- conversion from the original LLaVA format ------------------------------------------


def expand_to_square(image: Image.Image, mean: tuple[float, ...]) -> Image.Image:
    """LLaVA's ``pad``: the image centred on a square of the processor's mean colour."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in mean))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLIP vision tower that ``mm_vision_tower`` names, as a local folder."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tower")
    transformers.CLIPVisionModel(vision_config()).save_pretrained(folder)
    clip_processor().save_pretrained(folder)
    return folder


def phi3_config(vocab_size: int) -> transformers.Phi3Config:
    return transformers.Phi3Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, original_max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_theta=10000.0,
    )  # fmt: skip


PHI3_SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


class Original:
    """What differs between the language models an original-format checkpoint is built on."""

    def __init__(self, model_type: str, text_model: type, config: object, specials: list[str], rendered: str) -> None:
        self.model_type, self.text_model, self.config, self.specials, self.rendered = (
            model_type, text_model, config, specials, rendered
        )  # fmt: skip
        self.vocab = BASE_VOCAB + len(specials)

    def tokenizer(self) -> transformers.PreTrainedTokenizerFast:
        tokenizer = byte_tokenizer(image_token=False)
        tokenizer.add_tokens([transformers.AddedToken(t, special=True, normalized=False) for t in self.specials], special_tokens=True)
        return tokenizer


ORIGINALS = {
    "llama": Original("llava_llama", transformers.LlamaForCausalLM, text_config, [], (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\n[1.<image>\n Name: <bo>, Info: a dog\n]"
        "What is <bo> doing? ASSISTANT: A dog.</s>USER: Where? ASSISTANT:"
    )),
    # LLaVA++'s phi3_instruct conversation, which RAP-Phi3-V trained with
    "phi3": Original("llava_phi", transformers.Phi3ForCausalLM, phi3_config, PHI3_SPECIALS, (
        "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\n[1.<image>\n Name: <bo>, Info: a dog\n]"
        "What is <bo> doing?<|end|>\n<|assistant|>\nA dog.<|end|>\n<|user|>\nWhere?<|end|>\n<|assistant|>\n"
    )),
}  # fmt: skip


def original_checkpoint(
    folder: Path, tower: Path, vision_inside: bool, weights_format: str, original: Original = ORIGINALS["llama"]
) -> dict[str, torch.Tensor]:
    """A LLaVA-1.5 checkpoint as the LLaVA repository (or LLaVA++ for Phi-3) saves it; returns its tensors."""
    torch.manual_seed(2)
    language_model = original.text_model(original.config(original.vocab))
    state = {key: value.clone() for key, value in language_model.state_dict().items()}
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # as old checkpoints carry
    for n, shape in (("0", (32, 16)), ("2", (32, 32))):
        state[f"model.mm_projector.{n}.weight"] = torch.randn(shape)
        state[f"model.mm_projector.{n}.bias"] = torch.randn(shape[0])
    if vision_inside:  # a tower of its own, unlike the one in the tower folder
        clip = transformers.CLIPVisionModel(vision_config())
        for key, value in clip.state_dict().items():
            state[f"model.vision_tower.vision_tower.vision_model.{key}"] = value.clone()
    folder.mkdir()
    if weights_format == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    settings = original.config(original.vocab).to_dict() | {
        "model_type": original.model_type, "mm_vision_tower": str(tower),
        "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 16, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(settings))
    original.tokenizer().save_pretrained(folder)
    return state


def vision_state(state: dict[str, torch.Tensor], tower: Path) -> dict[str, torch.Tensor]:
    """The CLIP weights the converted model should hold, under CLIPVisionModel's own names."""
    prefix = "model.vision_tower.vision_tower.vision_model."
    inside = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    return inside or transformers.CLIPVisionModel.from_pretrained(tower).state_dict()


@pytest.mark.parametrize(
    ("family", "vision_inside", "weights_format"), [("llama", False, "safetensors"), ("llama", True, "bin"), ("phi3", False, "safetensors")]
)
def test_converted_checkpoint_computes_what_the_original_does(
    tmp_path: Path, tower: Path, family: str, vision_inside: bool, weights_format: str
) -> None:
    original = ORIGINALS[family]
    vocab = original.vocab
    source = tmp_path / "original"
    state = original_checkpoint(source, tower, vision_inside, weights_format, original)
    target = convert_llava_checkpoint(source, tmp_path / "converted")
    generator = create_generator(f"llava:{target}", device="cpu")
    model = generator._model
    assert model.config.image_token_id == vocab
    assert generator._processor.tokenizer.convert_tokens_to_ids("<image>") == vocab
    assert generator.max_concepts == (3 if family == "phi3" else 2)  # the paper's: 3 for RAP-Phi3-V

    # (a) every tensor where it belongs
    text_state = {
        key: value
        for key, value in state.items()
        if not key.startswith(("model.mm_projector", "model.vision_tower")) and not key.endswith("inv_freq")
    }
    language = model.model.language_model.state_dict()
    for key, value in text_state.items():
        if key != "lm_head.weight":
            assert torch.equal(language[key.removeprefix("model.")][: value.shape[0]], value), key
    assert torch.equal(model.lm_head.weight[:vocab], state["lm_head.weight"])
    for rows in (language["embed_tokens.weight"], model.lm_head.weight):
        assert torch.allclose(rows[vocab], rows[:vocab].mean(dim=0))
    projector = model.model.multi_modal_projector
    assert torch.equal(projector.linear_1.weight, state["model.mm_projector.0.weight"])
    assert torch.equal(projector.linear_2.bias, state["model.mm_projector.2.bias"])
    expected_vision = vision_state(state, tower)
    converted_vision = model.model.vision_tower.state_dict()
    assert converted_vision.keys() == expected_vision.keys()
    assert all(torch.equal(converted_vision[key], value) for key, value in expected_vision.items())

    # pad to a square with the mean colour, as LLaVA's expand2square did
    wide = Image.open(PHOTOS / "dog_00.jpg").crop((0, 0, 256, 120))
    conversation = [user_turn("What is <bo> doing?", wide, concepts()[:1])]
    batch, _ = generator._inputs(conversation)
    clip = transformers.AutoImageProcessor.from_pretrained(tower)
    padded = clip(expand_to_square(wide, clip.image_mean), return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(batch["pixel_values"][0], padded, atol=1e-6)

    # (b) logits equal a reference built from the original tensors without LLaVA's classes
    language_model = original.text_model(original.config(vocab)).eval()
    language_model.load_state_dict(text_state)
    clip_model = transformers.CLIPVisionModel(vision_config()).eval()
    clip_model.load_state_dict(expected_vision)
    with torch.inference_mode():
        hidden = clip_model(batch["pixel_values"], output_hidden_states=True).hidden_states[-2][:, 1:]
        linear, gelu = torch.nn.functional.linear, torch.nn.functional.gelu
        projected = linear(hidden, state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"])
        projected = linear(gelu(projected), state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"])
        ids = batch["input_ids"]
        images = ids == vocab
        embeds = language_model.model.embed_tokens(ids.masked_fill(images, 0))
        embeds[images] = projected.reshape(-1, projected.shape[-1])
        reference = language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        converted = model(**batch).logits[..., :vocab]
    assert torch.allclose(converted, reference, atol=1e-5)

    # (c) the chat template training used, exactly, and the reply ends where training ended it
    first = conversation[0]
    first.reply = "A dog."
    assert generator.render([first, Turn(["Where?"])]) == original.rendered
    if family == "phi3":
        assert original.tokenizer().convert_tokens_to_ids("<|end|>") in model.generation_config.eos_token_id
    assert isinstance(generator.generate([user_turn("Hi?", wide, [])], OPTIONS), str)


def test_conversion_refuses_what_it_cannot_express(tmp_path: Path, tower: Path) -> None:
    source = tmp_path / "original"
    original_checkpoint(source, tower, vision_inside=False, weights_format="safetensors")
    settings = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(settings | {"model_type": "llava_mistral"}))
    with pytest.raises(ConfigError, match="Llama-based"):
        convert_llava_checkpoint(source, tmp_path / "out")
    (source / "config.json").write_text(json.dumps(settings | {"mm_projector_type": "linear"}))
    with pytest.raises(ConfigError, match="mlp2x_gelu"):
        convert_llava_checkpoint(source, tmp_path / "out")
    (source / "config.json").write_text(json.dumps(settings))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        convert_llava_checkpoint(source, tmp_path / "busy")
    with pytest.raises(ConfigError, match="original LLaVA format"):
        create_generator(f"llava:{source}")
    assert not (tmp_path / "out").exists()


def test_convert_from_the_command_line_then_ask(tmp_path: Path, tower: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rap.cli import run

    original_checkpoint(tmp_path / "original", tower, vision_inside=False, weights_format="safetensors")
    assert run(["convert", "llava", str(tmp_path / "original"), str(tmp_path / "hf")]) == 0
    assert "converted to" in capsys.readouterr().out
    db = ["--db", str(tmp_path / "db"), "--encoder", "tiny", "--faces", "none", "--detector", "none"]
    run([*db, "concept", "add", "bo", "-i", str(PHOTOS / "dog_00.jpg"), "--info", "a dog"])
    capsys.readouterr()
    code = run([*db, "ask", str(PHOTOS / "dog_01.jpg"), "Who?", "--backend", "llava", "--model", str(tmp_path / "hf"), "--json"])
    assert code == 0 and "answer" in json.loads(capsys.readouterr().out)
    assert run(["convert", "llava", str(tmp_path / "original"), str(tmp_path / "hf")]) == 2  # target not empty


def test_static_cache_decodes_what_the_dynamic_cache_decodes(tiny_llava: Path) -> None:
    dynamic = create_generator(f"llava:{tiny_llava}", device="cpu")
    static = create_generator(f"llava:{tiny_llava}", device="cpu", static_cache=True)
    assert static.generate([question()], OPTIONS) == dynamic.generate([question()], OPTIONS)
    # a prompt longer than the cache was sized for grows it rather than failing
    short = create_generator(f"llava:{tiny_llava}", device="cpu", static_cache=True, cache_length=64)
    assert short.generate([question()], OPTIONS) == dynamic.generate([question()], OPTIONS)


@pytest.mark.slow
def test_compiled_decoding_step_decodes_what_eager_decodes(tiny_llava: Path) -> None:
    """``compile``: transformers compiles the decoding step once; answers do not change.

    transformers compiles only on accelerators; its private switch lets this
    run the same path on the CPU (about half a minute of compiling).
    """
    from transformers import CompileConfig

    eager = create_generator(f"llava:{tiny_llava}", device="cpu")
    compiled = create_generator(f"llava:{tiny_llava}", device="cpu", compile=True)
    everywhere = CompileConfig()
    everywhere._compile_all_devices = True
    compiled._model.generation_config.compile_config = everywhere
    expected = eager.generate([question()], OPTIONS)
    assert compiled.generate([question()], OPTIONS) == expected
    assert compiled.generate([question()], OPTIONS) == expected  # the compiled step, reused
    assert compiled._model._compiled_call is not None

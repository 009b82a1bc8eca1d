"""rap train: records become inference prompts, the loss sees only replies, LoRA learns, merging is exact."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from PIL import Image

from rap.errors import ConfigError, InvalidInput
from rap.generation import GenerationOptions, Turn, create_generator
from support.random_models import save_random_llava, save_random_qwen2_vl
from rap.training import TrainOptions, merge_adapter, train
from rap.training.data import parse_record, read_jsonl
from rap.training.encode import IGNORE, ChatEncoder
from rap.training.family import load_family

PHOTOS = Path(__file__).parent / "photos"

TWO_CONCEPTS = {
    "id": "bo-kit",
    "image": ["dog_00.jpg", "dog_01.jpg", "cat_00.jpg"],
    "conversations": [
        {"from": "human", "value": "<image>\n[1.<image>\n Name: <bo>, Info: <bo> is a Shiba Inu.\n"
                                   "2.<image>\n Name: <kit>, Info: <kit> is a ginger cat.\n]What is <bo> doing?"},
        {"from": "gpt", "value": "<bo> is lying on the grass."},
        {"from": "human", "value": "Is <bo> happy?"},
        {"from": "gpt", "value": "Yes."},
    ],
    "extra": {"dog_01.jpg": {"name": "<bo>", "info": "<bo> is a Shiba Inu.", "category": "dog"},
              "cat_00.jpg": {"name": "<kit>", "info": "<kit> is a ginger cat.", "category": "cat"}},
}
TEXT_ONLY = {
    "id": "text",
    "conversations": [
        {"from": "human", "value": "[1. Name: <tea>, Info: <tea> is a blue teapot.\n]What colour is <tea>?"},
        {"from": "gpt", "value": "<tea> is blue."},
    ],
}


def options(**changes: object) -> TrainOptions:
    fast = {"rank": 8, "alpha": 16, "dropout": 0.0, "learning_rate": 1e-2, "warmup": 0.0, "logging_steps": 1,
                "image_root": str(PHOTOS), "precision": "fp32", "workers": 0}
    return TrainOptions(**{**fast, **changes})


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random LLaVA, its output layer scaled up as a trained model's is.

    At initialisation (std 0.02 over 32 normalised dimensions) no logit can
    exceed about 0.6, so no adaptation of the layers below could lower the
    loss much and the test would measure nothing.
    """
    import transformers

    folder = save_random_llava(tmp_path_factory.mktemp("llava") / "base", "tiny")
    model = transformers.LlavaForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(base: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("run")
    data = write_jsonl(folder / "train.jsonl", [TWO_CONCEPTS, TEXT_ONLY] * 2)
    result = train(base, data, folder / "adapter", options(max_steps=30, batch_size=2, save_steps=1000))
    return result


def encoder(base: Path) -> ChatEncoder:
    return ChatEncoder(load_family(str(base), torch.float32), max_length=4096)


def test_records_become_rap_prompts_with_concepts_capped() -> None:
    record = parse_record(TWO_CONCEPTS, PHOTOS, max_concepts=1)
    assert [p.name for p in record.images] == ["dog_00.jpg", "dog_01.jpg"]  # the second crop dropped with its text
    first = record.turns()[0]
    assert first.text() == "<image>\n[1.<image>\n Name: <bo>, Info: <bo> is a Shiba Inu.\n]What is <bo> doing?"
    assert first.reply == "<bo> is lying on the grass."
    kept = parse_record(TWO_CONCEPTS, PHOTOS, max_concepts=2).turns()[0]
    assert kept.text() == TWO_CONCEPTS["conversations"][0]["value"] and len(kept.images) == 3
    assert parse_record(TEXT_ONLY, PHOTOS, 2).turns()[0].text() == TEXT_ONLY["conversations"][0]["value"]


def test_only_reply_tokens_carry_labels_and_prompts_match_inference(base: Path) -> None:
    turns = parse_record(TWO_CONCEPTS, PHOTOS, max_concepts=2).turns()
    coder = encoder(base)
    example = coder.encode(turns)
    ids, labels = example["input_ids"], example["labels"]
    kept = labels != IGNORE
    assert torch.equal(ids[kept], labels[kept])
    assert coder.tokenizer.decode(ids[kept]) == " <bo> is lying on the grass.</s> Yes.</s>"
    assert not kept[ids == coder.image_token_id].any()
    assert example["pixel_values"].shape[0] == 3
    # the prompt before each reply is, token for token, what the llava backend sends
    generator = create_generator(f"llava:{base}", device="cpu")
    for n in range(len(turns)):
        asked = turns[: n] + [Turn(turns[n].parts)]
        assert coder.prompt(asked) == generator.render(asked)
        prompt_ids = generator._inputs(asked)[0]["input_ids"][0]
        assert torch.equal(ids[: len(prompt_ids)], prompt_ids)
        assert labels[len(prompt_ids) - 1] == IGNORE and labels[len(prompt_ids)] != IGNORE


def test_bad_records_are_skipped_and_counted(tmp_path: Path) -> None:
    missing = {**TWO_CONCEPTS, "image": ["dog_00.jpg", "nowhere.jpg", "cat_00.jpg"]}
    unanswered = {**TEXT_ONLY, "conversations": TEXT_ONLY["conversations"][:1]}
    data = write_jsonl(tmp_path / "d.jsonl", [TWO_CONCEPTS, missing, unanswered, "junk"])
    dataset = read_jsonl(data, max_concepts=2, image_root=PHOTOS)
    assert len(dataset.records) == 1 and dataset.skipped_count == 3
    assert "image missing" in dataset.describe_skipped()
    # a missing crop beyond max_concepts does not matter: it is dropped anyway
    assert len(read_jsonl(write_jsonl(tmp_path / "e.jsonl", [{**TWO_CONCEPTS, "image": ["dog_00.jpg", "dog_01.jpg", "x.jpg"]}]), 1, PHOTOS).records) == 1
    with pytest.raises(InvalidInput, match="no trainable record"):
        read_jsonl(write_jsonl(tmp_path / "f.jsonl", [missing, unanswered]), 2, PHOTOS)


def test_a_skipped_record_names_the_field_at_fault(tmp_path: Path) -> None:
    shapes = [
        "junk",
        {"id": "x"},
        {**TEXT_ONLY, "conversations": "hello"},
        {**TEXT_ONLY, "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "ok"}]},
        {**TWO_CONCEPTS, "image": ["dog_00.jpg", 7]},
        {**TEXT_ONLY, "extra": {"anything": 1}, "meta": {"task": "qa"}},  # fields rap does not read are fine
    ]
    dataset = read_jsonl(write_jsonl(tmp_path / "d.jsonl", shapes), max_concepts=2, image_root=PHOTOS)
    assert len(dataset.records) == 1
    assert dataset.skipped == {
        "not a JSON object": 1, "no 'conversations' field": 1, "bad 'conversations' field": 2, "bad 'image' field": 1
    }


@pytest.mark.slow
def test_training_lowers_the_loss(trained) -> None:
    assert trained.steps == 30 and trained.records == 4
    first, last = trained.losses[0], sum(trained.losses[-3:]) / 3
    assert last < 0.5 * first, trained.losses
    assert (trained.adapter_dir / "adapter_config.json").is_file()


@pytest.mark.slow
def test_losses_are_logged_to_tensorboard(trained) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [log_dir] = {event.parent for event in (trained.adapter_dir / "runs").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(log_dir))
    events.Reload()
    logged = [scalar.value for scalar in events.Scalars("train/loss")]
    assert logged == pytest.approx(trained.losses, rel=1e-5)


def logits(model, example) -> torch.Tensor:
    with torch.no_grad():
        batch = {k: v.unsqueeze(0) if k not in ("pixel_values", "image_grid_thw") else v for k, v in example.items() if k != "labels"}
        return model(**batch).logits


@pytest.mark.slow
def test_adapter_changes_the_model_and_merging_keeps_its_logits(base: Path, trained, tmp_path: Path) -> None:
    import peft
    import transformers

    example = encoder(base).encode(parse_record(TWO_CONCEPTS, PHOTOS, 2).turns())
    plain = transformers.LlavaForConditionalGeneration.from_pretrained(base).eval()
    before = logits(plain, example)
    adapted = peft.PeftModel.from_pretrained(plain, trained.adapter_dir).eval()
    after = logits(adapted, example)
    assert (after - before).abs().max() > 1e-2

    merged_dir = merge_adapter(base, trained.adapter_dir, tmp_path / "merged")
    merged = transformers.LlavaForConditionalGeneration.from_pretrained(merged_dir).eval()
    torch.testing.assert_close(logits(merged, example), after, atol=1e-4, rtol=1e-4)

    generator = create_generator(f"llava:{merged_dir}", device="cpu")
    photo = Image.open(PHOTOS / "dog_00.jpg")
    answer = generator.generate([Turn([photo, "\nWhat is this?"])], GenerationOptions(max_new_tokens=4))
    assert isinstance(answer, str) and answer


def test_merge_refuses_a_folder_without_adapter(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adapter_config.json"):
        merge_adapter(base, tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_activation_checkpointing_and_bf16_train_the_same_model(base: Path, tmp_path: Path) -> None:
    """Recomputing activations changes memory, not results; bf16 autocast stays close to fp32."""
    data = write_jsonl(tmp_path / "d.jsonl", [TWO_CONCEPTS, TEXT_ONLY] * 2)
    plain = train(base, data, tmp_path / "plain", options(max_steps=3))
    recomputed = train(base, data, tmp_path / "recomputed", options(max_steps=3, activation_checkpointing=True))
    assert recomputed.losses == pytest.approx(plain.losses, rel=1e-4)
    half = train(base, data, tmp_path / "bf16", options(max_steps=3, precision="bf16"))
    assert half.losses == pytest.approx(plain.losses, rel=0.05)
    assert half.losses[-1] < half.losses[0]


@pytest.mark.slow
def test_data_workers_encode_what_the_training_process_would(base: Path, tmp_path: Path) -> None:
    """Worker processes change when conversations are encoded, not what the model learns from."""
    import pickle

    data = write_jsonl(tmp_path / "d.jsonl", [TWO_CONCEPTS, TEXT_ONLY] * 2)
    inline = train(base, data, tmp_path / "inline", options(max_steps=3))
    workers = train(base, data, tmp_path / "workers", options(max_steps=3, workers=2))
    assert workers.losses == pytest.approx(inline.losses, rel=1e-5)
    # a worker started by spawn gets the family pickled: the processor, not the weights
    family = load_family(str(base), torch.float32)
    copy = pickle.loads(pickle.dumps(family))
    assert not hasattr(copy, "model") and len(pickle.dumps(family)) < 1_000_000
    turns = parse_record(TWO_CONCEPTS, PHOTOS, max_concepts=2).turns()
    assert torch.equal(ChatEncoder(copy, 2048).encode(turns)["labels"], ChatEncoder(family, 2048).encode(turns)["labels"])


def test_sharding_settings_that_cannot_work_are_refused_before_training(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rap.cli import run

    data = write_jsonl(tmp_path / "d.jsonl", [TEXT_ONLY])
    train_args = ["train", "--base", str(base), "--data", str(data), "--max-steps", "1"]
    (tmp_path / "broken.json").write_text("{zero")
    (tmp_path / "zero3.json").write_text('{"zero_optimization": {"stage": 3}}')
    cases = {  # name: (arguments, exit code, message)
        "fsdp": (["--fsdp", "full_shard auto_wrap"], 6, "launch several"),  # one process: nothing to shard across
        "missing": (["--deepspeed", str(tmp_path / "nope.json")], 2, "cannot read DeepSpeed config"),
        "broken": (["--deepspeed", str(tmp_path / "broken.json")], 2, "cannot read DeepSpeed config"),
        "both": (["--deepspeed", str(tmp_path / "zero3.json"), "--fsdp", "full_shard"], 2, "not both"),
    }
    if importlib.util.find_spec("deepspeed") is None:
        cases["not installed"] = (["--deepspeed", str(tmp_path / "zero3.json")], 6, "rap-mllm[deepspeed]")
    for name, (extra, code, message) in cases.items():
        capsys.readouterr()
        assert run([*train_args, "--out", str(tmp_path / name), *extra]) == code, name
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error, (name, error)
        assert not (tmp_path / name).exists(), name  # refused before anything was written


@pytest.mark.slow
def test_resume_continues_where_the_checkpoint_left_off(base: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [TWO_CONCEPTS, TEXT_ONLY] * 2)
    whole = train(base, data, tmp_path / "run", options(max_steps=4, save_steps=2, save_total_limit=None))
    assert whole.steps == 4 and (tmp_path / "run" / "checkpoint-2").is_dir()
    shutil.rmtree(tmp_path / "run" / "checkpoint-4")  # as if the run had died after step 3
    resumed = train(base, data, tmp_path / "run", options(max_steps=4, save_steps=2), resume=True)
    assert resumed.steps == 4
    # same steps, same data order, same optimizer state: the same losses
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(base, data, tmp_path / "empty", options(max_steps=1), resume=True)


def test_resume_takes_the_newest_checkpoint_by_step_not_by_name(tmp_path: Path) -> None:
    from rap.training.trainer import _checkpoint

    for name in ("checkpoint-9", "checkpoint-10", "checkpoint-notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-11").write_text("a file, not a checkpoint")
    assert Path(_checkpoint(True, tmp_path)).name == "checkpoint-10"
    assert _checkpoint(False, tmp_path) is None
    with pytest.raises(ConfigError, match="does not exist"):
        _checkpoint(tmp_path / "checkpoint-3", tmp_path)


@pytest.mark.slow
def test_build_train_merge_ask_from_the_command_line(
    base: Path, tmp_path: Path, rap_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole pipeline of issue 5 on real photos: rap data build, rap train, rap train merge, rap ask."""
    from rap.cli import run

    for concept, names in {"bo": ["dog_00.jpg", "dog_01.jpg"], "kit": ["cat_00.jpg", "cat_01.jpg"]}.items():
        (tmp_path / "src" / concept).mkdir(parents=True)
        for name in names:
            (tmp_path / "src" / concept / name).write_bytes((PHOTOS / name).read_bytes())
    assert run(["data", "build", f"folders:{tmp_path / 'src'}", "--out", str(tmp_path / "data")]) == 0
    train_args = ["train", "--base", str(base), "--data", str(tmp_path / "data" / "data.jsonl"), "--out", str(tmp_path / "run"),
                  "--rank", "4", "--alpha", "8", "--max-steps", "3", "--precision", "fp32", "--json"]  # fmt: skip
    capsys.readouterr()
    assert run(train_args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 3 and result["records"] > 0 and result["seconds"] > 0 and result["samples_per_second"] > 0
    capsys.readouterr()
    assert run(["train", "merge", str(base), str(tmp_path / "run"), str(tmp_path / "merged")]) == 0
    # the trained model plugs into rap ask through a profile, as the merge command suggests
    suggested = capsys.readouterr().out
    profile = suggested[suggested.index("[profiles.my-rap]") :]
    rap_home.mkdir(exist_ok=True)
    (rap_home / "config.toml").write_text(profile)
    db = ["--db", str(tmp_path / "db"), "--encoder", "tiny", "--faces", "none", "--detector", "none"]
    assert run([*db, "concept", "add", "bo", "-i", str(PHOTOS / "dog_00.jpg"), "--info", "a dog"]) == 0
    capsys.readouterr()
    assert run([*db, "--profile", "my-rap", "ask", str(PHOTOS / "dog_01.jpg"), "Is <bo> here?", "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["model"] == f"llava:{tmp_path / 'merged'}" and reply["concepts"][0]["name"] == "bo"
    assert run(["train", "--base", str(base), "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r2")]) != 0
    assert "error:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def qwen_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL, its output layer scaled up as the LLaVA fixture's is, for the same reason."""
    import transformers

    folder = save_random_qwen2_vl(tmp_path_factory.mktemp("qwen") / "base")
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    return folder


def test_qwen_prompts_match_inference_and_only_replies_carry_labels(qwen_base: Path) -> None:
    turns = parse_record(TWO_CONCEPTS, PHOTOS, max_concepts=2).turns()
    coder = encoder(qwen_base)
    example = coder.encode(turns)
    ids, labels = example["input_ids"], example["labels"]
    kept = labels != IGNORE
    assert torch.equal(ids[kept], labels[kept])
    assert coder.tokenizer.decode(ids[kept]) == "<bo> is lying on the grass.<|im_end|>\nYes.<|im_end|>\n"  # ChatML closes a turn with "<|im_end|>\n"
    assert example["image_grid_thw"].shape == (3, 3)
    assert torch.equal(example["mm_token_type_ids"].bool(), ids == coder.image_token_id)
    generator = create_generator(f"qwen2-vl:{qwen_base}", device="cpu")
    for n in range(len(turns)):
        asked = turns[:n] + [Turn(turns[n].parts)]
        assert coder.prompt(asked) == generator.render(asked)
        inputs = generator._inputs(asked)
        prompt_ids = inputs["input_ids"][0]
        assert torch.equal(ids[: len(prompt_ids)], prompt_ids)  # the backend's widening, token for token
        assert labels[len(prompt_ids) - 1] == IGNORE and labels[len(prompt_ids)] != IGNORE
    assert torch.equal(inputs["image_grid_thw"], example["image_grid_thw"])


@pytest.mark.slow
def test_qwen_training_lowers_the_loss_and_merging_keeps_its_logits(qwen_base: Path, tmp_path: Path) -> None:
    import peft
    import transformers

    data = write_jsonl(tmp_path / "train.jsonl", [TWO_CONCEPTS, TEXT_ONLY] * 2)
    trained = train(qwen_base, data, tmp_path / "adapter", options(max_steps=30, batch_size=2, save_steps=1000))
    first, last = trained.losses[0], sum(trained.losses[-3:]) / 3
    assert last < 0.5 * first, trained.losses

    example = encoder(qwen_base).encode(parse_record(TWO_CONCEPTS, PHOTOS, 2).turns())
    plain = transformers.AutoModelForImageTextToText.from_pretrained(qwen_base).eval()
    adapted = peft.PeftModel.from_pretrained(plain, trained.adapter_dir).eval()
    after = logits(adapted, example)
    merged_dir = merge_adapter(qwen_base, trained.adapter_dir, tmp_path / "merged")
    merged = transformers.AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    torch.testing.assert_close(logits(merged, example), after, atol=1e-4, rtol=1e-4)

    generator = create_generator(f"qwen2-vl:{merged_dir}", device="cpu")
    answer = generator.generate([Turn([Image.open(PHOTOS / "dog_00.jpg"), "\nWhat is this?"])], GenerationOptions(max_new_tokens=4))
    assert isinstance(answer, str) and answer


def test_an_original_llava_checkpoint_is_sent_to_rap_convert(tmp_path: Path) -> None:
    from rap.errors import ConfigError
    from rap.training.family import load_family

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_vision_tower": "openai/clip"}))
    with pytest.raises(ConfigError, match="rap convert llava"):
        load_family(str(tmp_path), torch.float32)


# two records whose replies have the same number of tokens: the mean loss over both is then the
# mean of each one's, however the engine splits them between processes
TEA = {"id": "tea", "conversations": [
    {"from": "human", "value": "[1. Name: <tea>, Info: <tea> is a blue teapot.\n]What colour is <tea>?"},
    {"from": "gpt", "value": "<tea> is blue."}]}
MUG = {"id": "mug", "conversations": [
    {"from": "human", "value": "[1. Name: <mug>, Info: <mug> is a pink cup.\n]What colour is <mug>?"},
    {"from": "gpt", "value": "<mug> is pink."}]}  # fmt: skip


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a run may take up to its 900 s below; room for a second one, or a retry
@pytest.mark.parametrize(
    "sharding", [[], ["--fsdp", "full_shard auto_wrap"], ["--deepspeed", "zero3"]], ids=["ddp", "fsdp", "zero3"]
)
def test_two_processes_train_as_one_with_the_whole_batch(base: Path, tmp_path: Path, sharding: list[str]) -> None:
    """The engine's data parallelism, for real: torchrun, two processes, gloo on the CPU.

    Each process takes one of the two records; with gradients averaged between
    them (DDP), or parameters sharded and gathered (FSDP, DeepSpeed ZeRO-3), two updates give the
    adapter that one process gets from both records in one batch. Had the
    processes trained apart, each would have followed its own record.
    """
    import shutil
    import subprocess
    import sys

    if "--deepspeed" in sharding:
        pytest.importorskip("deepspeed")
    data = write_jsonl(tmp_path / "train.jsonl", [TEA, MUG])
    common = ["-m", "rap", "train", "--base", str(base), "--data", str(data), "--rank", "4", "--alpha", "8",
              "--dropout", "0", "--lr", "1e-2", "--max-steps", "2", "--epochs", "2", "--precision", "fp32", "--workers", "0",
              "--json"]  # fmt: skip
    runs = {
        "apart": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *common,
                  "--batch-size", "1", "--out", str(tmp_path / "apart"), *sharding],
        "whole": [sys.executable, *common, "--batch-size", "2", "--out", str(tmp_path / "whole")],
    }  # fmt: skip
    for name, command in runs.items():
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode and "(SIGABRT)" in done.stderr:
            # gloo on the CPU has aborted a rank of the FSDP run now and then (2 runs in
            # about 25 here, never twice running): one more try, afresh; a real failure fails twice
            shutil.rmtree(command[command.index("--out") + 1], ignore_errors=True)
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-12000:]
        [summary] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"adapter"')]
        assert summary["steps"] == 2, name
    apart, whole = adapter_weights(tmp_path / "apart"), adapter_weights(tmp_path / "whole")
    assert apart.keys() == whole.keys()
    assert any(not torch.equal(w, torch.zeros_like(w)) for w in whole.values())
    for key, weight in whole.items():
        assert torch.allclose(apart[key], weight, atol=1e-5), key


TRAIN_FLAGS = {"--rank": "rank", "--alpha": "alpha", "--dropout": "dropout", "--lr": "learning_rate", "--epochs": "epochs",
               "--batch-size": "batch_size", "--gradient-accumulation": "gradient_accumulation", "--workers": "workers",
               "--precision": "precision"}  # fmt: skip


def test_train_help_shows_the_defaults_of_train_options(capsys: pytest.CaptureFixture[str]) -> None:
    from rap.cli import run

    assert run(["train", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for flag, name in TRAIN_FLAGS.items():
        after = shown.split(f"{flag} ", 1)[1].split(" --", 1)[0]
        assert f"[default: {TrainOptions.model_fields[name].default}]" in after, flag


def test_train_without_flags_runs_with_train_options_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import rap.training
    from rap.cli import run
    from rap.training import TrainResult

    received: list[TrainOptions] = []

    def record(base: str, data: Path, out: Path, options: TrainOptions, resume: bool = False) -> TrainResult:
        received.append(options)
        return TrainResult(adapter_dir=out / "adapter", steps=0, losses=[], records=0)

    monkeypatch.setattr(rap.training, "train", record)
    args = ["train", "--base", "tiny", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "run"), "--json"]
    assert run(args) == 0
    assert run([*args, "--rank", "8", "--gradient-checkpointing"]) == 0
    assert received == [TrainOptions(), TrainOptions(rank=8, activation_checkpointing=True)]

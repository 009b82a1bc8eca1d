"""`rap data build`: real photos, a tiny COCO file, the offline template annotator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from rap.data import (
    ANNOTATORS,
    TASKS,
    BuildConfig,
    GeneratorAnnotator,
    GeneratorAnnotatorOptions,
    TemplateAnnotator,
    build_dataset,
    create_annotator,
    dataset_stats,
    open_source,
)
from rap.data.sources import CocoSource, Source
from rap.errors import BackendError, InvalidFormat, InvalidInput, UnknownBackend
from rap.generation import GENERATORS, Generator, PromptConcept, user_turn

PHOTOS = ["dog_00.jpg", "dog_01.jpg", "cat_00.jpg", "cat_01.jpg", "teapot_00.jpg", "clock_00.jpg", "teapot_01.jpg"]


@pytest.fixture
def coco(tmp_path: Path, photos: Path) -> Path:
    """A COCO file over copies of the test photos, with one bad annotation of each kind."""
    images = tmp_path / "images"
    images.mkdir()
    for name in PHOTOS:
        shutil.copy(photos / name, images / name)
    files = PHOTOS + ["missing.jpg"]
    categories = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "teapot"},
                  {"id": 4, "name": "clock"}, {"id": 5, "name": ""}]
    cat_of = {"dog": 1, "cat": 2, "teapot": 3, "clock": 4}
    annotations = [
        {"id": n, "image_id": n, "category_id": cat_of.get(name.split("_")[0], 1), "bbox": [30, 40, 180, 170]}
        for n, name in enumerate(PHOTOS)
    ]
    annotations += [
        {"id": 100, "image_id": 0, "category_id": 1, "bbox": [5, 5, 60, 60]},  # a second dog in dog_00
        {"id": 101, "image_id": len(PHOTOS), "category_id": 1, "bbox": [0, 0, 10, 10]},  # missing image
        {"id": 102, "image_id": 2, "category_id": 2, "bbox": [400, 400, 50, 50]},  # outside the image
        {"id": 103, "image_id": 4, "category_id": 5, "bbox": [0, 0, 50, 50]},  # empty category
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": n, "file_name": name} for n, name in enumerate(files)],
        "annotations": annotations,
        "categories": categories,
    }))
    return path


@pytest.fixture
def general(tmp_path: Path) -> Path:
    path = tmp_path / "llava_instruct.json"
    records = [{"id": f"g{n}", "image": f"coco/{n}.jpg",
                "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A thing."}]}
               for n in range(10)]
    path.write_text(json.dumps(records))
    return path


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]


def _source(coco: Path) -> list[Source]:
    return [CocoSource(coco, images=coco.parent / "images")]


def test_build_makes_every_task_in_the_prompt_builders_layout(coco: Path, general: Path, tmp_path: Path) -> None:
    config = BuildConfig(general=general, general_fraction=0.3, noise_ratio=0.5)
    report = build_dataset(_source(coco), tmp_path / "out", config=config)
    out = tmp_path / "out"
    records = _records(out)
    assert set(report.tasks) == set(TASKS) | {"general"}
    assert report.tasks["general"] == 3
    assert len(records) == report.samples
    placeholder = Image.new("RGB", (8, 8))
    for record in records:
        if "meta" not in record:
            continue
        human, answer = (turn["value"] for turn in record["conversations"])
        crops = record["image"][1:]
        assert all((out / crop).is_file() for crop in crops)
        assert set(crops) == set(record["extra"])
        concepts = [PromptConcept(record["extra"][c]["name"], record["extra"][c]["info"], placeholder) for c in crops]
        question = human.rsplit("]", 1)[-1] if concepts else human.split("\n", 1)[1]
        assert human == user_turn(question, placeholder, concepts).text()
        assert human.count("<image>") == len(record["image"])
        assert answer
        if record["meta"]["task"] == "grounding":
            box = json.loads(answer)
            assert len(box) == 4 and all(0 <= v <= 1 for v in box) and box[0] < box[2] and box[1] < box[3]
        if record["meta"]["task"] == "recognition":
            assert answer.startswith(("Yes", "No"))
    assert {r["meta"]["task"] for r in records if "meta" in r and r["conversations"][1]["value"].startswith("No")} == {"recognition"}


def test_bad_annotations_are_skipped_and_counted(coco: Path, tmp_path: Path) -> None:
    report = build_dataset(_source(coco), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["skipped"] == {"empty_box": 1, "empty_category": 1, "missing_image": 1}
    assert manifest["samples"] == report.samples > 0
    assert manifest["sources"] == {"coco": report.samples}
    assert manifest["config"]["margin"] == 0.1
    assert any("missing.jpg" in w for w in manifest["warnings"])


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_noise_concepts_appear_in_the_configured_share(coco: Path, tmp_path: Path, ratio: float) -> None:
    config = BuildConfig(noise_ratio=ratio, noise_k=3)
    build_dataset(_source(coco), tmp_path / "out", config=config)
    records = _records(tmp_path / "out")
    noisy = [r for r in records if r["meta"]["noise"]]
    assert abs(len(noisy) / len(records) - ratio) < 0.2
    for record in noisy:
        assert record["meta"]["noise"] == 2
        # the distractors are concepts not in the image, and the answer is the clean one
        assert len(record["extra"]) == len(record["image"]) - 1 >= 3
    assert dataset_stats(tmp_path / "out")["noise_share"] == round(len(noisy) / len(records), 4)


def test_answers_do_not_change_with_noise(coco: Path, tmp_path: Path) -> None:
    clean = _records(build_dataset(_source(coco), tmp_path / "a", config=BuildConfig(noise_ratio=0.0)).output)
    noisy = _records(build_dataset(_source(coco), tmp_path / "b", config=BuildConfig(noise_ratio=1.0)).output)
    grounding = lambda records: sorted(r["conversations"][1]["value"] for r in records if r["meta"]["task"] == "grounding")
    assert grounding(clean) == grounding(noisy)


def test_stats_read_the_folder(coco: Path, general: Path, tmp_path: Path) -> None:
    report = build_dataset(_source(coco), tmp_path / "out", config=BuildConfig(general=general, general_fraction=0.5))
    stats = dataset_stats(tmp_path / "out")
    assert stats["samples"] == report.samples
    assert stats["tasks"] == dict(sorted(report.tasks.items()))
    assert stats["sources"] == {"coco": report.samples - 5, "general": 5}
    assert stats["missing_crops"] == 0 and stats["crops"] > 0
    assert sum(stats["concepts_per_sample"].values()) == report.samples - 5
    next((tmp_path / "out" / "crops").glob("*.jpg")).unlink()
    assert dataset_stats(tmp_path / "out")["missing_crops"] == 1
    with pytest.raises(InvalidInput):
        dataset_stats(tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: Invalid JSON"),
        ('["a list"]', "line 2: should be a JSON object"),
        ('{"meta": {"task": "qa", "source": "coco", "noise": "1"}}', "line 2: field 'meta.noise': Input should be a valid integer"),
        ('{"meta": {"task": "qa", "source": "coco", "noise": 0, "nosie": 1}}', "line 2: unknown field 'meta.nosie'; known: task, source, noise"),
        ('{"meta": {"task": "qa", "source": "coco", "noise": 0}, "extra": ["crops/a.jpg"]}', "line 2: field 'extra': should be a JSON object"),
    ],
)
def test_stats_name_the_line_and_field_of_a_hand_edited_record(tmp_path: Path, line: str, message: str) -> None:
    general = json.dumps({"id": "g", "conversations": [], "image": "x.jpg", "anything": "else"})  # passed through
    (tmp_path / "data.jsonl").write_text(f"{general}\n{line}\n\n")
    with pytest.raises(InvalidFormat) as error:
        dataset_stats(tmp_path)
    assert f"data.jsonl {message}" in error.value.message and "\n" not in error.value.message
    (tmp_path / "data.jsonl").write_text(f"{general}\n\n")
    assert dataset_stats(tmp_path)["sources"] == {"general": 1}


class FailingAnnotator(TemplateAnnotator):
    """Cannot describe teapots and cannot answer anything."""

    def describe(self, crop, category):
        if category == "teapot":
            raise BackendError("the model server is down")
        return super().describe(crop, category)

    def respond(self, instruction, image, concepts):
        raise BackendError("the model server is down")


def test_an_erroring_annotator_skips_what_it_touches(coco: Path, tmp_path: Path) -> None:
    report = build_dataset(_source(coco), tmp_path / "out", annotator=FailingAnnotator())
    assert report.skipped["annotator_error"] > 2
    assert set(report.tasks) == {"grounding", "recognition"}
    assert not any("teapot" in r["extra"][c]["category"] for r in _records(tmp_path / "out") for c in r["extra"])


def test_a_failed_build_leaves_no_folder(coco: Path, tmp_path: Path) -> None:
    class Broken(TemplateAnnotator):
        def respond(self, instruction, image, concepts):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(_source(coco), tmp_path / "out", annotator=Broken())
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.staging-*"))
    build_dataset(_source(coco), tmp_path / "out")
    with pytest.raises(InvalidInput, match="exists"):
        build_dataset(_source(coco), tmp_path / "out")
    with pytest.raises(InvalidInput, match="no samples made .*missing_image"):
        build_dataset([CocoSource(coco)], tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_the_cache_makes_a_rebuild_free(coco: Path, tmp_path: Path) -> None:
    first = GeneratorAnnotator(GENERATORS.create("echo", reply="A fine thing."), tmp_path / "cache",
                               GeneratorAnnotatorOptions(calls_per_minute=0, price_per_1k_tokens=0.5))
    build_dataset(_source(coco), tmp_path / "out", annotator=first)
    assert first.usage.calls > 0 and first.usage.cache_hits == 0 and first.usage.cost > 0
    again = GeneratorAnnotator(GENERATORS.create("echo", reply="A fine thing."), tmp_path / "cache",
                               GeneratorAnnotatorOptions(calls_per_minute=0))
    report = build_dataset(_source(coco), tmp_path / "out", annotator=again, overwrite=True)
    assert again.usage.calls == 0 and again.usage.cache_hits == first.usage.calls
    assert report.annotator["cache_hits"] == first.usage.calls
    assert _records(tmp_path / "out")[0]["conversations"][1]["value"]


class Flaky(Generator):
    """Fails ``failures`` times, then answers."""

    def __init__(self, argument: str, failures: int = 2) -> None:
        self.id, self.failures, self.calls = "flaky", failures, 0

    def _stream(self, conversation, options):
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendError("503 from the server")
        yield "A shiny teapot."


GENERATORS.register("flaky", help="test backend: fails, then answers")(Flaky)


def test_retries_back_off_exponentially(tmp_path: Path, photos: Path) -> None:
    sleeps: list[float] = []
    annotator = GeneratorAnnotator("flaky", tmp_path / "cache", GeneratorAnnotatorOptions(backoff_seconds=1.0, calls_per_minute=0),
                                   sleep=sleeps.append)
    crop = Image.open(photos / "teapot_00.jpg")
    assert annotator.describe(crop, "teapot") == "A shiny teapot."
    assert sleeps == [1.0, 2.0]
    assert (annotator.usage.calls, annotator.usage.retries, annotator.usage.errors) == (3, 2, 0)
    hopeless = GeneratorAnnotator(Flaky("", failures=99), tmp_path / "c2",
                                  GeneratorAnnotatorOptions(retries=3, calls_per_minute=0), sleep=sleeps.append)
    with pytest.raises(BackendError):
        hopeless.describe(crop, "teapot")
    assert hopeless.usage.calls == 4 and hopeless.usage.errors == 1
    assert sleeps[2:] == [2.0, 4.0, 8.0]  # 2 s to start with (the default), doubled each time


def test_calls_keep_to_the_rate_limit(tmp_path: Path, photos: Path) -> None:
    sleeps: list[float] = []
    annotator = GeneratorAnnotator(Flaky("", failures=0), tmp_path / "cache", GeneratorAnnotatorOptions(calls_per_minute=30),
                                   sleep=sleeps.append, clock=lambda: 100.0)
    crop = Image.open(photos / "teapot_00.jpg")
    annotator.describe(crop, "teapot")
    annotator.describe(crop, "kettle")
    assert sleeps == [2.0]


def test_a_refused_request_is_not_retried(tmp_path: Path, photos: Path) -> None:
    class Refusing(Flaky):
        def _stream(self, conversation, options):
            self.calls += 1
            raise InvalidInput("the server rejected the request")
            yield ""

    sleeps: list[float] = []
    annotator = GeneratorAnnotator(Refusing(""), tmp_path / "cache", sleep=sleeps.append)
    with pytest.raises(InvalidInput):
        annotator.describe(Image.open(photos / "teapot_00.jpg"), "teapot")
    assert annotator.usage.calls == 1 and sleeps == []


def test_annotators_resolve_through_the_registry(coco: Path, tmp_path: Path) -> None:
    assert set(ANNOTATORS.names()) >= {"offline", "generator"}
    assert isinstance(create_annotator("offline", tmp_path / "cache"), TemplateAnnotator)
    chosen = create_annotator("generator:echo", tmp_path / "cache", calls_per_minute=0, price_per_1k_tokens=1.0)
    assert isinstance(chosen, GeneratorAnnotator) and chosen.generator.id == "echo"
    report = build_dataset(_source(coco), tmp_path / "out", annotator=chosen)
    assert report.annotator["calls"] > 0 and report.annotator["cost"] > 0
    again = create_annotator("generator:echo", tmp_path / "cache", calls_per_minute=0)
    assert build_dataset(_source(coco), tmp_path / "out", annotator=again, overwrite=True).annotator["calls"] == 0
    with pytest.raises(UnknownBackend, match="unknown annotator 'openai:gpt-4o'; known: .*generator.*offline"):
        create_annotator("openai:gpt-4o", tmp_path / "cache")
    with pytest.raises(InvalidInput, match="takes no argument or options"):
        create_annotator("offline", tmp_path / "cache", calls_per_minute=5)
    with pytest.raises(InvalidInput, match="generator annotator option retries"):
        create_annotator("generator:echo", tmp_path / "cache", retries=-1)
    with pytest.raises(InvalidInput, match="name the generation backend"):
        create_annotator("generator", tmp_path / "cache")


def test_the_command_line_chooses_the_annotator_by_name(
    coco: Path, tmp_path: Path, rap_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rap.cli import run

    source = f"coco:{coco},images={coco.parent / 'images'}"
    out = tmp_path / "out"
    args = ["data", "build", source, "--out", str(out), "--json"]
    assert run([*args, "--annotator", "generator:echo", "--calls-per-minute", "0"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["annotator"]["calls"] > 0
    assert run([*args, "--overwrite", "--annotator", "generator:echo", "--calls-per-minute", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["annotator"]["calls"] == 0  # paid answers kept under RAP_HOME
    assert (rap_home / "cache" / "annotator").is_dir()
    assert run([*args, "--overwrite", "--annotator", "openai:gpt-4o"]) == 6
    error = capsys.readouterr().err
    assert "unknown annotator 'openai:gpt-4o'" in error and "generator" in error and "Traceback" not in error


def test_the_command_line_takes_its_defaults_from_build_config(
    coco: Path, tmp_path: Path, rap_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rap.cli import run

    assert run(["data", "build", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for flag, name in [("--noise-ratio", "noise_ratio"), ("--noise-k", "noise_k"), ("--general-fraction", "general_fraction")]:
        assert f"[default: {BuildConfig.model_fields[name].default}]" in shown.split(flag, 1)[1].split("--", 1)[0]
    assert run(["data", "build", f"coco:{coco},images={coco.parent / 'images'}", "--out", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"] == BuildConfig().model_dump(mode="json")


class _Untouched(TemplateAnnotator):
    def describe(self, image: Image.Image, category: str) -> str:
        raise AssertionError("the build started work before its general file was checked")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"conversations": []}, "llava.json: LLaVA-Instruct JSON: "),
        ([{"conversations": []}, {"id": "b"}], "llava.json: record 2: field 'conversations'"),
        ([{"conversations": [{"from": "human"}]}], "llava.json: record 1: field 'conversations.0.value'"),
        ([{"conversations": []}, "text"], "llava.json: record 2: "),
        ([{"conversations": [], "image": 3}], "llava.json: record 1: field 'image"),
    ],
)
def test_a_malformed_general_record_is_one_line_naming_file_record_and_field(
    coco: Path, tmp_path: Path, content: object, message: str
) -> None:
    general = tmp_path / "llava.json"
    general.write_text(json.dumps(content))
    with pytest.raises(InvalidFormat) as error:
        build_dataset(_source(coco), tmp_path / "out", _Untouched(), BuildConfig(general=general))
    assert message in error.value.message and "\n" not in error.value.message
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.staging-*"))


def test_a_process_pool_builds_the_same_dataset(coco: Path, tmp_path: Path) -> None:
    serial = build_dataset(_source(coco), tmp_path / "a", config=BuildConfig(workers=0))
    pooled = build_dataset(_source(coco), tmp_path / "b", config=BuildConfig(workers=2))
    assert (tmp_path / "a" / "data.jsonl").read_text() == (tmp_path / "b" / "data.jsonl").read_text()
    assert pooled.samples_per_second > 0 and serial.samples == pooled.samples
    a, b = sorted((tmp_path / "a" / "crops").iterdir()), sorted((tmp_path / "b" / "crops").iterdir())
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_folder_video_and_referring_sources(tmp_path: Path, photos: Path) -> None:
    folders = tmp_path / "folders"
    for concept, names in {"dog_1": ["dog_00.jpg", "dog_01.jpg", "dog_02.jpg"], "cat": ["cat_00.jpg", "cat_01.jpg"]}.items():
        (folders / concept).mkdir(parents=True)
        for name in names:
            shutil.copy(photos / name, folders / concept / name)
    video = tmp_path / "video.json"
    video.write_text(json.dumps({
        "images": [{"id": n, "file_name": name, "video_id": 7, "frame_index": n} for n, name in enumerate(["dog_00.jpg", "dog_01.jpg"])],
        "annotations": [{"id": n, "image_id": n, "category_id": 1, "track_id": 3, "bbox": [10, 10, 100, 100]} for n in range(2)],
        "categories": [{"id": 1, "name": "dog"}],
    }))
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps([{"image": "teapot_00.jpg", "box": [20, 20, 200, 220], "category": "teapot",
                                 "sentences": ["the white teapot"]}]))
    specs = [
        open_source(f"folders:{folders}"),
        open_source(f"video:{video},images={photos}"),
        open_source(f"refcoco:{refs},images={photos},name=refs"),
    ]
    report = build_dataset(specs, tmp_path / "out", config=BuildConfig(names="sks"))
    records = _records(tmp_path / "out")
    assert set(report.sources) == {"folders", "video", "refs"}
    video_grounding = [r for r in records if r["meta"]["source"] == "video" and r["meta"]["task"] == "grounding"]
    assert video_grounding and video_grounding[0]["image"][0].endswith("dog_00.jpg")
    assert not any(r["meta"]["task"] == "grounding" for r in records if r["meta"]["source"] == "folders")
    infos = [v["info"] for r in records if r["meta"]["source"] == "refs" for v in r["extra"].values()]
    assert any("the white teapot" in info for info in infos)
    assert all(v["name"].startswith("<sks") for r in records for v in r["extra"].values())
    with pytest.raises(UnknownBackend, match="known: coco, folders, identities, refcoco, video"):
        open_source("pascal:x.json")
    with pytest.raises(InvalidInput, match="bad coco source option 'instances=x.json'; known: images=PATH, name=LABEL"):
        open_source(f"coco:{video},instances=x.json")


def test_a_malformed_source_is_one_rap_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [], "annotations": [{"image_id": 1}]}')
    with pytest.raises(InvalidFormat, match="not COCO-format"):
        build_dataset([CocoSource(broken)], tmp_path / "out")
    broken.write_text("{not json")
    with pytest.raises(InvalidFormat, match="not readable JSON"):
        build_dataset([CocoSource(broken)], tmp_path / "out")
    with pytest.raises(InvalidInput, match="does not exist"):
        build_dataset([CocoSource(tmp_path / "nowhere.json")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cache_keeps_the_prompt_and_reply_as_json_and_forgets_nothing(tmp_path: Path) -> None:
    import sqlite3

    annotator = GeneratorAnnotator(GENERATORS.create("echo", reply="A red mug."), tmp_path / "cache",
                                   GeneratorAnnotatorOptions(calls_per_minute=0))
    crop = Image.new("RGB", (16, 16), "red")
    assert annotator.describe(crop, "mug") == annotator.describe(crop, "mug") == "A red mug."
    assert (annotator.usage.calls, annotator.usage.cache_hits) == (1, 1)
    assert annotator.describe(Image.new("RGB", (16, 16), "blue"), "mug") == "A red mug."
    assert annotator.usage.calls == 2  # other pixels, another prompt
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:  # no value is pickled: nothing runs when read
        assert {mode for (mode,) in db.execute("SELECT mode FROM Cache")} <= {1, 2}  # diskcache's raw and binary modes
        assert db.execute("SELECT value FROM Settings WHERE key = 'eviction_policy'").fetchone() == ("none",)

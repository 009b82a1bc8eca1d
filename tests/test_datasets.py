"""Benchmark readers: each layout from small fixture files, paths, ids and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rap.errors import InvalidFormat, InvalidInput
from rap.evaluation.datasets import FORMATS, detect_format, read_eval_set
from rap.evaluation.readers_json import personalize


def copy_photos(photos: Path, folder: Path, names: dict[str, str]) -> None:
    """Copy tests/photos/<source> to folder/<target> for each target: source."""
    for target, source in names.items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photos / source, folder / target)


def concept_database(root: Path, photos: Path, names: tuple[str, ...] = ("bo", "mam")) -> Path:
    """A plain concept folder (one subfolder per concept), as rap import reads it."""
    sources = {"bo": "dog_00.jpg", "mam": "cat_00.jpg", "clock": "clock_00.jpg"}
    copy_photos(photos, root / "database", {f"{name}/ref.jpg": sources[name] for name in names})
    return root / "database"


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# -- QA -----------------------------------------------------------------------------


def visual_qa(root: Path, photos: Path) -> Path:
    """The official visual QA file: keys written as in the Yo'LLaVA repository, images under test/."""
    copy_photos(photos, root / "data" / "test", {"bo/1.jpg": "dog_01.jpg", "mam/1.jpg": "cat_01.jpg"})
    question = {"options": {"A": "Cat", "B": "Dog"}, "correct_answer": "B"}
    return write_json(
        root / "eval" / "visual-qa.json",
        {
            "bo": {"./yollava-data/test/bo/1.jpg": {"question": "What animal does <sks> resemble?", **question}},
            "mam": {"./yollava-data/test/mam/1.jpg": {"question": "Is sks's tail long?", **question}},
        },
    )


def test_visual_qa(photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    eval_set = read_eval_set(data, images_root=tmp_path / "data", database=concept_database(tmp_path, photos))
    assert detect_format(data) == "qa"
    assert sorted(eval_set.concepts) == ["bo", "mam"]
    bo, mam = eval_set.items
    assert (bo.id, bo.task, bo.concepts, bo.target, bo.answer) == ("qa/bo/yollava-data/test/bo/1.jpg", "qa", ("bo",), "bo", "B")
    assert bo.question == "What animal does <bo> resemble?" and mam.question == "Is <mam>'s tail long?"
    assert bo.options == {"A": "Cat", "B": "Dog"}
    assert bo.image == (tmp_path / "data" / "test" / "bo" / "1.jpg").resolve()
    assert eval_set.missing_files() == []


def test_text_only_qa_reads_option_singular(photos, tmp_path):
    data = write_json(
        tmp_path / "text-qa.json",
        {"bo": {"0": {"question": "Is sks a dog or a cat?", "option": {"A": "Dog", "B": "Cat"}, "correct_answer": "A"}}},
    )
    (item,) = read_eval_set(data, task="qa", database=concept_database(tmp_path, photos)).items
    assert (item.id, item.image, item.question, item.options, item.answer) == (
        "qa/bo/0", None, "Is <bo> a dog or a cat?", {"A": "Dog", "B": "Cat"}, "A"
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Is sks a dog?", "Is <bo> a dog?"),
        ("What is <sks>'s breed?", "What is <bo>'s breed?"),
        ("sks asks for sksx, not sks.", "<bo> asks for sksx, not <bo>."),
        ("Does he ask about tasks?", "Does he ask about tasks?"),
    ],
)
def test_placeholder_replaced_as_whole_word(question, expected):
    assert personalize(question, "bo") == expected


def test_qa_answer_must_be_an_option(tmp_path):
    data = write_json(tmp_path / "qa.json", {"bo": {"0": {"question": "q", "options": {"A": "x", "B": "y"}, "correct_answer": "C"}}})
    with pytest.raises(InvalidFormat, match="qa.json: bo/0: correct_answer 'C' is not one of the options"):
        read_eval_set(data)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"question": " ", "options": {"A": "x", "B": "y"}, "correct_answer": "A"}, "field 'question': must be non-empty text"),
        ({"question": "q", "options": {"A": "x"}, "correct_answer": "A"}, "field 'options': Dictionary should have at least 2 items"),
        ({"question": "q", "options": {"A": "x", "B": 2}, "correct_answer": "A"}, "field 'options.B': Input should be a valid string"),
        ({"question": "q", "correct_answer": "A"}, "field 'options': Field required"),
        ({"question": "q", "options": ["x", "y"], "correct_answer": "A"}, "field 'options': should be a JSON object"),
    ],
)
def test_qa_errors_name_the_file_the_question_and_the_field(tmp_path, entry, message):
    data = write_json(tmp_path / "qa.json", {"bo": {"./test/bo/1.png": entry}})
    with pytest.raises(InvalidFormat) as error:
        read_eval_set(data)
    assert f"qa.json: bo/./test/bo/1.png: {message}" in error.value.message and "\n" not in error.value.message


def test_fields_the_official_files_add_are_ignored(tmp_path, photos):
    entry = {"question": "q", "option": {"A": "x", "B": "y"}, "correct_answer": "B", "type": "visual", "source": "yollava"}
    data = write_json(tmp_path / "qa.json", {"bo": {"0": entry}})
    (item,) = read_eval_set(data, database=concept_database(tmp_path, photos)).items
    assert (item.options, item.answer) == ({"A": "x", "B": "y"}, "B")


# -- recognition --------------------------------------------------------------------


def recognition_list(root: Path) -> Path:
    """The official shape, including its repeat of the positive question under type 'negative'."""

    def entry(image: str, concept: str, kind: str, answer: bool) -> dict[str, object]:
        question = f"<image>\nIs <{concept}> in this image? Answer with a single word or phrase."
        return {"image": image, "question": question, "concept": concept, "type": kind, "correct_answer": answer}

    image = "benchmark_data/yollava-data/test/bo/1.jpg"
    return write_json(
        root / "recognition.json",
        [entry(image, "bo", "positive", True), entry(image, "bo", "negative", True), entry(image, "mam", "negative", False)],
    )


def test_recognition_list(photos, tmp_path):
    copy_photos(photos, tmp_path / "images" / "bo", {"1.jpg": "dog_01.jpg"})
    data = recognition_list(tmp_path)
    eval_set = read_eval_set(data, task="recognition", images_root=tmp_path / "images", database=concept_database(tmp_path, photos))
    positive, negative = eval_set.items
    assert positive.id == "recognition/benchmark_data/yollava-data/test/bo/1.jpg/bo"
    assert (positive.target, positive.answer, positive.concepts) == ("bo", True, ("bo",))
    assert (negative.target, negative.answer, negative.concepts) == ("mam", False, ("bo",))
    assert positive.question == "Is <bo> in this image? Answer with a single word or phrase."
    assert positive.image == (tmp_path / "images" / "bo" / "1.jpg").resolve()
    assert eval_set.missing_files() == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image": "a.jpg", "concept": "bo", "correct_answer": "true"}, "field 'correct_answer': Input should be a valid boolean"),
        ({"image": "a.jpg", "correct_answer": True}, "field 'concept': Field required"),
        ("a.jpg", "should be a JSON object"),
    ],
)
def test_recognition_errors_name_the_entry_and_the_field(tmp_path, entry, message):
    rows = [{"image": "a.jpg", "concept": "bo", "correct_answer": True}, entry]
    with pytest.raises(InvalidFormat, match=f"r.json: entry 2: {message}"):
        read_eval_set(write_json(tmp_path / "r.json", rows))


def test_recognition_contradiction_is_an_error(tmp_path):
    rows = [{"image": "a.jpg", "concept": "bo", "correct_answer": answer} for answer in (True, False)]
    with pytest.raises(InvalidFormat, match="entry 2: asks again"):
        read_eval_set(write_json(tmp_path / "r.json", rows))


def test_task_that_the_file_does_not_hold(photos, tmp_path):
    with pytest.raises(InvalidInput, match="holds recognition items, not qa items"):
        read_eval_set(recognition_list(tmp_path), task="qa", database=concept_database(tmp_path, photos))


# -- concept database -----------------------------------------------------------------


def test_concepts_missing_from_the_database_are_listed(photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    with pytest.raises(InvalidFormat, match=r"1 concept\(s\) missing from .*: mam; add them"):
        read_eval_set(data, database=concept_database(tmp_path, photos, names=("bo",)))


def test_items_that_name_concepts_need_a_database(photos, tmp_path):
    with pytest.raises(InvalidInput, match="pass the concept database"):
        read_eval_set(visual_qa(tmp_path, photos))


def test_official_rap_database(photos, tmp_path):
    folder = tmp_path / "example_database"
    copy_photos(photos, folder, {"bo.png": "dog_00.jpg", "mam.png": "cat_00.jpg"})
    concept_dict = {
        f"<{name}>": {"name": name, "image": f"example_database/{name}.png", "info": f"<{name}> is mine.", "category": kind}
        for name, kind in (("bo", "dog"), ("mam", "cat"))
    }
    write_json(folder / "database.json", {"concept_dict": concept_dict, "path_to_concept": {}})
    eval_set = read_eval_set(visual_qa(tmp_path, photos), images_root=tmp_path / "data", database=folder)
    assert eval_set.concepts["bo"].category == "dog" and eval_set.concepts["bo"].info == "<bo> is mine."
    assert eval_set.concepts["bo"].images == ((folder / "bo.png").resolve(),)


# -- paths ----------------------------------------------------------------------------


def test_wrong_rooted_paths_resolve_against_images_root(photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    database = concept_database(tmp_path, photos)
    # The file says ./yollava-data/test/bo/1.jpg; the images are under data/test/bo/1.jpg.
    for root in (tmp_path / "data", tmp_path / "data" / "test", tmp_path / "data" / "test" / "bo"):
        items = read_eval_set(data, images_root=root, database=database).items
        assert items[0].image == (tmp_path / "data" / "test" / "bo" / "1.jpg").resolve()


def test_missing_files_are_reported_not_raised(photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    (tmp_path / "data" / "test" / "mam" / "1.jpg").unlink()
    eval_set = read_eval_set(data, images_root=tmp_path / "data", database=concept_database(tmp_path, photos))
    assert len(eval_set.items) == 2
    # An image found nowhere is reported as written, below the images root.
    assert eval_set.missing_files() == [(tmp_path / "data" / "yollava-data" / "test" / "mam" / "1.jpg").resolve()]
    # Without images_root the paths are looked for beside the file, where nothing is.
    beside = read_eval_set(data, database=concept_database(tmp_path, photos))
    assert len(beside.missing_files()) == 2


def test_images_root_must_exist(photos, tmp_path):
    with pytest.raises(InvalidInput, match="images root .*: no such folder"):
        read_eval_set(visual_qa(tmp_path, photos), images_root=tmp_path / "nowhere")


# -- folders --------------------------------------------------------------------------


def myvlm_folder(root: Path, photos: Path, captions: object) -> Path:
    folder = root / "myvlm"
    copy_photos(photos, folder, {"bo/2.jpg": "dog_00.jpg", "bo/10.jpg": "dog_01.jpg", "bo/11.jpg": "dog_02.jpg"})
    copy_photos(photos, folder, {"clock/a.jpg": "clock_00.jpg", "clock/b.jpg": "clock_01.jpg"})
    write_json(folder / "bo" / "captions.json", captions)
    (folder / "clock" / "category.txt").write_text("clock\n")
    return folder


@pytest.mark.parametrize(
    "captions",
    [
        {"10.jpg": ["bo on a sofa", "bo resting"], "11.jpg": "bo outside"},
        [{"image": "10.jpg", "captions": ["bo on a sofa", "bo resting"]}, {"image": "11.jpg", "caption": "bo outside"}],
    ],
)
def test_concept_folders_with_captions(photos, tmp_path, captions):
    folder = myvlm_folder(tmp_path, photos, captions)
    eval_set = read_eval_set(folder)
    assert detect_format(folder) == "concept-folders"
    # 2.jpg comes before 10.jpg: it is bo's reference, the rest are queries.
    assert eval_set.concepts["bo"].images == (folder.resolve() / "bo" / "2.jpg",)
    assert eval_set.concepts["clock"].category == "clock"
    assert [(i.id, i.concepts, i.answer) for i in eval_set.items] == [
        ("caption/bo/10.jpg", ("bo",), ("bo on a sofa", "bo resting")),
        ("caption/bo/11.jpg", ("bo",), ("bo outside",)),
        ("caption/clock/b.jpg", ("clock",), None),
    ]


def test_captioned_image_that_is_missing_is_reported(photos, tmp_path):
    folder = myvlm_folder(tmp_path, photos, {"12.jpg": ["bo gone"]})
    eval_set = read_eval_set(folder)
    assert eval_set.missing_files() == [folder.resolve() / "bo" / "12.jpg"]


def test_more_references_and_retrieval_items(photos, tmp_path):
    folder = myvlm_folder(tmp_path, photos, {})
    eval_set = read_eval_set(folder, task="retrieval", references=2)
    assert [p.name for p in eval_set.concepts["bo"].images] == ["2.jpg", "10.jpg"]
    assert [(i.id, i.task, i.answer) for i in eval_set.items] == [("retrieval/bo/11.jpg", "retrieval", None)]


def test_seeded_references_are_random_but_reproducible(photos, tmp_path):
    folder = myvlm_folder(tmp_path, photos, {})
    chosen = {seed: read_eval_set(folder, seed=seed).concepts["bo"].images for seed in range(8)}
    assert chosen[3] == read_eval_set(folder, seed=3).concepts["bo"].images
    assert len(set(chosen.values())) > 1


def dreambooth_folder(root: Path, photos: Path) -> Path:
    folder = root / "dreambooth"
    copy_photos(photos, folder, {"dog/00.jpg": "dog_00.jpg", "dog/01.jpg": "dog_01.jpg", "dog/02.jpg": "dog_02.jpg"})
    copy_photos(photos, folder, {"teapot/00.jpg": "teapot_00.jpg", "teapot/01.jpg": "teapot_01.jpg"})
    classes = "Classes\n\nsubject_name,class\ndog,dog\nteapot,teapot\n\nPrompts\n\nprompt_list = ['a {0} {1}']\n"
    (folder / "prompts_and_classes.txt").write_text(classes)
    return folder


def test_dreambooth(photos, tmp_path):
    folder = dreambooth_folder(tmp_path, photos)
    eval_set = read_eval_set(folder, task="retrieval")
    assert detect_format(folder) == "dreambooth"
    assert {n: (c.category, [p.name for p in c.images]) for n, c in eval_set.concepts.items()} == {
        "dog": ("dog", ["00.jpg"]),
        "teapot": ("teapot", ["00.jpg"]),
    }
    assert [i.id for i in eval_set.items] == ["retrieval/dog/01.jpg", "retrieval/dog/02.jpg", "retrieval/teapot/01.jpg"]


def test_recognition_from_folders_asks_about_every_concept(photos, tmp_path):
    eval_set = read_eval_set(dreambooth_folder(tmp_path, photos), task="recognition")
    assert [(i.id, i.answer) for i in eval_set.items[:2]] == [
        ("recognition/dog/01.jpg/dog", True),
        ("recognition/dog/01.jpg/teapot", False),
    ]
    assert len(eval_set.items) == 3 * 2


def test_folders_refuse_qa_and_a_database(photos, tmp_path):
    folder = dreambooth_folder(tmp_path, photos)
    with pytest.raises(InvalidInput, match="gives caption, retrieval, recognition items, not 'qa'"):
        read_eval_set(folder, task="qa")
    with pytest.raises(InvalidInput, match="holds its own reference photos"):
        read_eval_set(folder, database=concept_database(tmp_path, photos))


# -- manifest -------------------------------------------------------------------------


def write_manifest(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")
    return path


def test_manifest(photos, tmp_path):
    copy_photos(photos, tmp_path / "images", {"x.jpg": "dog_01.jpg"})
    rows = [
        {"image": "images/x.jpg", "concepts": ["bo"], "task": "caption", "answer": ["bo sleeps"]},
        {"image": "images/x.jpg", "concepts": ["bo"], "question": "What is <bo>?", "options": {"A": "dog", "B": "cat"}, "answer": "A"},
        {"id": "mine", "image": "images/x.jpg", "concepts": ["bo"], "target": "mam", "answer": False},
    ]
    manifest = write_manifest(tmp_path / "items.jsonl", rows)
    eval_set = read_eval_set(manifest, database=concept_database(tmp_path, photos))
    assert detect_format(manifest) == "manifest"
    assert [(i.id, i.task, i.answer) for i in eval_set.items] == [
        ("caption/1", "caption", ("bo sleeps",)),
        ("qa/2", "qa", "A"),
        ("mine", "recognition", False),
    ]
    assert eval_set.items[0].image == (tmp_path / "images" / "x.jpg").resolve()
    only_qa = read_eval_set(manifest, task="qa", database=concept_database(tmp_path, photos))
    assert [i.id for i in only_qa.items] == ["qa/2"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image": "x.jpg", "concepts": ["bo"], "option": {"A": "x", "B": "y"}}, "unknown field 'option'; known: id, task"),
        ({"image": "x.jpg", "concepts": ["bo"]}, "task None is not one of"),
        ({"image": "x.jpg", "concepts": "bo", "task": "retrieval"}, "field 'concepts': Input should be a valid list"),
        ({"image": "x.jpg", "concepts": ["bo", ""], "task": "retrieval"}, "field 'concepts.1': must be non-empty text"),
        ({"task": "qa", "question": "q", "options": {"A": "x", "B": "y"}, "answer": "C"}, "answer 'C' is not one of"),
        ({"task": "caption", "concepts": ["bo"]}, "a caption item needs an 'image'"),
        ({"task": "recognition", "target": "bo", "answer": "yes"}, "true/false 'answer'"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, row, message):
    manifest = write_manifest(tmp_path / "items.jsonl", [{"image": "a.jpg", "task": "retrieval"}, row])
    with pytest.raises(InvalidFormat, match=f"items.jsonl line 2: .*{message}"):
        read_eval_set(manifest)


def test_manifest_ids_must_be_unique(tmp_path):
    rows = [{"id": "a", "image": "a.jpg", "task": "retrieval"}] * 2
    with pytest.raises(InvalidFormat, match="line 2: id 'a' repeats"):
        read_eval_set(write_manifest(tmp_path / "items.jsonl", rows))


# -- errors and ids -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["broken.json", "broken.jsonl"])
def test_malformed_json_is_one_line_invalid_format(tmp_path, name):
    path = tmp_path / name
    path.write_text('{"bo": {"0": {"question": ', encoding="utf-8")
    with pytest.raises(InvalidFormat) as error:
        read_eval_set(path)
    assert "not valid JSON" in error.value.message and "\n" not in error.value.message


@pytest.mark.parametrize("layout", ["empty-folder", "text-file", "other-json"])
def test_unknown_layout_lists_the_supported_formats(tmp_path, layout):
    path = {"empty-folder": tmp_path, "text-file": tmp_path / "notes.txt", "other-json": tmp_path / "x.json"}[layout]
    if layout == "text-file":
        path.write_text("hello")
    if layout == "other-json":
        write_json(path, {"conversations": []})
    with pytest.raises(InvalidFormat) as error:
        read_eval_set(path)
    assert all(name in error.value.message for name in FORMATS) and "\n" not in error.value.message


def test_a_concept_database_is_not_a_benchmark(photos, tmp_path):
    (tmp_path / "db").mkdir()
    write_json(tmp_path / "db" / "database.json", {"concept_dict": {}})
    with pytest.raises(InvalidInput, match="is a concept database"):
        read_eval_set(tmp_path / "db")


def test_no_such_path(tmp_path):
    with pytest.raises(InvalidInput, match="no such file or folder"):
        read_eval_set(tmp_path / "nothing.json")


def test_ids_are_stable_and_unique(photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    database = concept_database(tmp_path, photos)
    first = [i.id for i in read_eval_set(data, images_root=tmp_path / "data", database=database).items]
    # Where the images are found does not change the ids: a resumed run finds its items.
    again = [i.id for i in read_eval_set(data, images_root=tmp_path / "data" / "test", database=database).items]
    assert first == again and len(set(first)) == len(first)
    folder = dreambooth_folder(tmp_path, photos)
    ids = [i.id for i in read_eval_set(folder, task="recognition").items]
    assert ids == [i.id for i in read_eval_set(folder, task="recognition").items] and len(set(ids)) == len(ids)

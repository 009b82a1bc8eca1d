"""The command line, run in process through the same entry point as `rap`."""

import json
import re
import shlex

import pytest

from rap.cli import run


@pytest.fixture
def rap(capsys, tmp_path):
    """Run `rap --db <tmp> --encoder tiny --faces none ...`; return (exit code, stdout, stderr)."""

    def invoke(*args, db=tmp_path / "db"):
        code = run(["--db", str(db), "--encoder", "tiny", "--faces", "none", "--detector", "none", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_add_list_show_edit_remove(rap, photos):
    code, out, _ = rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "--info", "<bo> is my dog", "-c", "dog", "--attr", "age=3")
    assert code == 0 and "remembered <bo>" in out
    code, out, _ = rap("concept", "list", "--json")
    [bo] = json.loads(out)
    assert (bo["name"], bo["token"], bo["attributes"]) == ("bo", "<bo>", {"age": "3"})
    assert rap("concept", "show", "bo")[0] == 0
    code, out, _ = rap("concept", "edit", "bo", "--info", "new", "--add-image", photos / "dog_01.jpg", "--json")
    assert code == 0 and json.loads(out)["info"] == "new" and len(json.loads(out)["images"]) == 2
    assert rap("concept", "remove", "bo")[0] == 0
    assert json.loads(rap("concept", "list", "--json")[1]) == []


def test_retrieve_prints_json_lines_one_per_image(rap, photos):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog")
    rap("concept", "add", "kit", "-i", photos / "cat_00.jpg", "-c", "cat")
    code, out, _ = rap("retrieve", photos / "dog_00.jpg", photos / "cat_00.jpg", "-k", "1", "--threshold", "inf", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [line["concepts"][0]["name"] for line in lines] == ["bo", "kit"]
    assert lines[0]["concepts"][0]["box"] == [0, 0, 256, 256] and lines[0]["concepts"][0]["via"] == "image"
    code, out, _ = rap("retrieve", "--text", "what does <kit> eat?", "--json")
    named = json.loads(out)["concepts"]
    assert code == 0 and [(c["name"], c["via"], c["box"]) for c in named] == [("kit", "text", None)]
    code, out, _ = rap("retrieve", photos / "dog_00.jpg")
    assert code == 0 and "<bo>" in out


def test_retrieve_labels_the_top_k_and_strict_keeps_only_matches(rap, photos):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog")
    rap("concept", "add", "kit", "-i", photos / "cat_00.jpg", "-c", "cat")
    code, out, _ = rap("retrieve", photos / "dog_00.jpg", "-k", "2", "--threshold", "0.3", "--json")
    ranked = json.loads(out)["concepts"]
    assert code == 0 and [(c["name"], c["match"], c["space"]) for c in ranked] == [("bo", True, "image"), ("kit", False, "image")]
    code, out, _ = rap("retrieve", photos / "dog_00.jpg", "-k", "2", "--threshold", "0.3", "--strict", "--json")
    assert [c["name"] for c in json.loads(out)["concepts"]] == ["bo"]
    code, out, _ = rap("retrieve", photos / "clock_00.jpg", "-k", "2", "--threshold", "0.01", "--json")
    assert [c["match"] for c in json.loads(out)["concepts"]] == [False, False]  # none of them, yet both shown
    code, out, _ = rap("retrieve", "--text", "what does <kit> eat?", "--json")
    assert json.loads(out)["concepts"][0]["match"] is False  # named, no photo: nothing shows it


def test_import_export(rap, photos, tmp_path):
    (tmp_path / "plain" / "rex").mkdir(parents=True)
    (tmp_path / "plain" / "rex" / "a.jpg").write_bytes((photos / "dog_00.jpg").read_bytes())
    code, out, _ = rap("import", tmp_path / "plain", "-c", "dog", "--json")
    assert code == 0 and json.loads(out) == {"added": ["rex"], "skipped": []}
    code, out, _ = rap("export", tmp_path / "exported")
    assert code == 0 and (tmp_path / "exported" / "database.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["concept", "add", "bo", "-i", "missing.jpg"], 2, "no such file"),
        (["concept", "add", "two words", "-i", "{photo}"], 2, "must be one word"),
        (["concept", "add", "bo", "-i", "{photo}", "--attr", "oops"], 2, "KEY=VALUE"),
        (["concept", "show", "ghost"], 3, "no concept named 'ghost'"),
        (["concept", "edit", "ghost", "--info", "x"], 3, "no concept named"),
        (["concept", "remove", "ghost"], 3, "no concept named"),
        (["retrieve"], 2, "at least one image"),
        (["retrieve", "{bad}"], 2, "not an image"),
        (["import", "{bad}"], 2, "no such folder"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(rap, photos, tmp_path, args, code, message):
    bad = tmp_path / "bad.jpg"
    bad.write_text("garbage")
    args = [a.format(photo=photos / "dog_00.jpg", bad=bad) for a in args]
    rap("concept", "add", "seed", "-i", photos / "cat_00.jpg")  # read commands refuse a store that does not exist
    got, out, err = rap(*args)
    assert got == code
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image": "../outside.jpg"}, "lies outside"),
        ({"image": "{outside}"}, "lies outside"),
        ({"image": "db_json/../outside.jpg"}, "lies outside"),
        ({"image": "a.jpg", "colour": "red"}, "unknown field 'concept_dict.<a>.colour'"),
        ({"image": 3}, "field 'concept_dict.<a>.image': must be an image path or a list of them"),
        ({"image": [3]}, "field 'concept_dict.<a>.image.0': Input should be a valid string"),
    ],
)
def test_bad_database_json_is_one_line_and_imports_nothing(rap, photos, tmp_path, entry, message):
    (tmp_path / "db_json").mkdir()
    (tmp_path / "db_json" / "a.jpg").write_bytes((photos / "dog_00.jpg").read_bytes())
    (tmp_path / "outside.jpg").write_bytes((photos / "cat_00.jpg").read_bytes())
    entry = {k: v.format(outside=tmp_path / "outside.jpg") if isinstance(v, str) else v for k, v in entry.items()}
    (tmp_path / "db_json" / "database.json").write_text(json.dumps({"concept_dict": {"<a>": entry}}))
    code, _, err = rap("import", tmp_path / "db_json")
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert rap("concept", "list", "--json")[0] == 5  # nothing imported, not even an empty store made
    if "outside" in message:
        assert rap("import", tmp_path / "db_json", "--allow-outside")[0] == 0


def _image_file(rap, tmp_path, name):
    """The store's file of a concept's first image (its JSON names images by content hash, not by file)."""
    sha = json.loads(rap("concept", "show", name, "--json")[1])["images"][0]["sha256"]
    return next((tmp_path / "db" / "images" / sha[:2]).glob(f"{sha}.*"))


@pytest.mark.parametrize(("damage", "code", "message"), [("remove-image", 5, "missing from the store"), ("under-a-file", 2, "cannot write")])
def test_export_failures_are_one_line_and_write_nothing(rap, photos, tmp_path, damage, code, message):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog")
    target = tmp_path / "out" / "exported"
    if damage == "remove-image":
        _image_file(rap, tmp_path, "bo").unlink()
        (tmp_path / "out").mkdir()
    else:
        (tmp_path / "out").write_text("a file where a folder should be")
    got, _, err = rap("export", target)
    assert got == code and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not target.exists() and (damage != "remove-image" or list((tmp_path / "out").iterdir()) == [])


def _break_encoder(rap, photos, tmp_path):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog")
    return ["--db", tmp_path / "db", "--encoder", "tiny:other", "--faces", "none", "concept", "list"]


def _lose_an_image(rap, photos, tmp_path):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog")
    rap("concept", "add", "kit", "-i", photos / "cat_00.jpg", "-i", photos / "cat_01.jpg", "-c", "cat")
    for name in ("bo", "kit"):
        _image_file(rap, tmp_path, name).unlink()
    return ["--db", tmp_path / "db", "export", tmp_path / "exported"]


@pytest.mark.parametrize("scenario", [_break_encoder, _lose_an_image])
def test_every_command_an_error_suggests_runs_as_printed(rap, photos, tmp_path, capsys, scenario):
    """Follow each 'rap ...' an error message suggests, literally, until the failing command works."""
    failing = [str(a) for a in scenario(rap, photos, tmp_path)]
    followed = []
    for _ in range(3):
        code = run(failing)
        err = capsys.readouterr().err
        suggested = re.findall(r"'(rap [^']+)'", err)
        if code == 0 or not suggested:
            break
        assert code != 0 and len(suggested) == 1, err
        assert run(shlex.split(suggested[0])[1:]) == 0, capsys.readouterr().err
        followed.append(suggested[0])
        capsys.readouterr()
    assert followed and code == 0


def test_duplicate_add_exits_4_and_keeps_the_first(rap, photos):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "--info", "first")
    code, _, err = rap("concept", "add", "BO", "-i", photos / "cat_00.jpg", "--info", "second")
    assert code == 4 and "already exists" in err
    assert json.loads(rap("concept", "show", "bo", "--json")[1])["info"] == "first"


def test_foreign_db_folder(rap, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    code, _, err = rap("concept", "list", db=tmp_path / "mine")
    assert code == 5 and "other files" in err


def test_config_show_and_backends(rap, capsys):
    code, out, _ = rap("config", "show", "--json")
    shown = json.loads(out)
    assert shown["settings"]["encoder"] == {"value": "tiny", "source": "argument"}
    assert shown["settings"]["top_k"]["source"] == "default (profile offline)"
    assert run(["backends", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"offline", "clip"} <= {e["name"] for e in listing["encoder"]}
    assert {"multiscale", "owlv2", "none"} <= {e["name"] for e in listing["detector"]}
    assert {"local", "postgresql"} <= {e["name"] for e in listing["store"]}
    assert {e["name"] for e in listing["data source"]} == {"coco", "refcoco", "video", "identities", "folders"}
    assert {e["name"] for e in listing["training family"]} == {"llava", "qwen2_vl", "qwen2_5_vl"}
    assert {"offline", "generator"} <= {e["name"] for e in listing["annotator"]}


@pytest.mark.parametrize("as_json", [True, False])
def test_config_show_masks_secrets(rap, monkeypatch, as_json):
    monkeypatch.setenv("RAP_GENERATOR_OPTIONS", json.dumps({"api_key": "sk-VERYSECRET", "token": "tok-VERYSECRET", "max_concepts": 3}))
    code, out, _ = rap("config", "show", *(["--json"] if as_json else []))
    assert code == 0 and "VERYSECRET" not in out
    if as_json:
        shown = json.loads(out)["settings"]["generator_options"]["value"]
        assert shown == {"api_key": "********", "token": "********", "max_concepts": 3}


def test_unknown_encoder_lists_the_known_ones(capsys, tmp_path):
    assert run(["--db", str(tmp_path / "db"), "--encoder", "nope", "concept", "list"]) == 6
    assert "known:" in capsys.readouterr().err


@pytest.fixture
def filled_cli(rap, photos):
    rap("concept", "add", "bo", "-i", photos / "dog_00.jpg", "-c", "dog", "--info", "<bo> is my corgi")
    rap("concept", "add", "kit", "-i", photos / "cat_00.jpg", "-c", "cat", "--info", "<kit> is a cat")
    return rap


def test_ask_caption_recognize_locate(filled_cli, photos):
    code, out, _ = filled_cli("ask", photos / "dog_00.jpg", "Who is this?", "--backend", "echo", "--json")
    answer = json.loads(out)
    assert code == 0 and answer["answer"].startswith("<image>") and answer["concepts"][0]["name"] == "bo"
    code, out, _ = filled_cli("ask", "What does <kit> eat?", "--backend", "echo", "--json")
    assert json.loads(out)["concepts"] == [json.loads(out)["concepts"][0]] and json.loads(out)["concepts"][0]["via"] == "text"
    code, out, err = filled_cli("ask", "What does <kit> eat?", "--backend", "echo")
    assert code == 0 and "Name: <kit>" in out and "used <kit>: retrieved by text" in err
    code, out, _ = filled_cli("caption", photos / "cat_00.jpg", "--backend", "echo", "--json")
    assert code == 0 and "caption" in json.loads(out)["answer"]
    code, out, _ = filled_cli("recognize", photos / "dog_00.jpg", "bo", "--mode", "retriever", "--json")
    assert code == 0 and json.loads(out)["present"] is True
    code, out, _ = filled_cli("recognize", photos / "clock_00.jpg", "bo", "--mode", "retriever")
    assert code == 0 and out.strip() == "no"
    code, out, _ = filled_cli("locate", photos / "dog_00.jpg", "bo")
    assert code == 0 and out.strip() == "0,0,256,256"


def test_chat_keeps_history(filled_cli, photos, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Who is this?\nAnd <kit>?\n\n"))
    code, out, _ = filled_cli("chat", photos / "dog_00.jpg", "--backend", "echo", "-k", "1", "--json")
    first, second = (json.loads(line) for line in out.splitlines())
    assert code == 0 and "<image>" in first["answer"] and "Name: <kit>" in second["answer"]
    assert [c["name"] for c in second["concepts"]][-1] == "kit"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ask", "   ", "--backend", "echo"], 2, "the question is empty"),
        (["ask", "hi", "--backend", "nope"], 6, "unknown generator 'nope'"),
        (["recognize", "{photo}", "ghost", "--mode", "retriever"], 3, "no concept named"),
        (["recognize", "{photo}", "bo", "--mode", "psychic"], 2, "--mode"),
        (["locate", "{bad}", "bo"], 2, "not an image"),
    ],
)
def test_generation_bad_input(filled_cli, photos, tmp_path, args, code, message):
    bad = tmp_path / "bad.jpg"
    bad.write_text("garbage")
    got, _, err = filled_cli(*[a.format(photo=photos / "dog_00.jpg", bad=bad) for a in args])
    assert got == code and message in err and err.count("\n") == 1


def test_data_build_and_stats(capsys, photos, tmp_path):
    for concept, photo_names in {"bo": ["dog_00.jpg", "dog_01.jpg"], "kit": ["cat_00.jpg", "cat_01.jpg"]}.items():
        (tmp_path / "src" / concept).mkdir(parents=True)
        for name in photo_names:
            (tmp_path / "src" / concept / name).write_bytes((photos / name).read_bytes())
    assert run(["data", "build", f"folders:{tmp_path / 'src'}", "--out", str(tmp_path / "out"), "--names", "sks", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["samples"] > 0 and (tmp_path / "out" / "data.jsonl").exists()
    assert run(["data", "stats", str(tmp_path / "out"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == manifest["samples"] and stats["missing_crops"] == 0
    assert run(["data", "build", f"folders:{tmp_path / 'src'}", "--out", str(tmp_path / "out")]) == 2  # exists
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["concept", "add", "bo", "-i", "{missing}"], "no such file"),
        (["concept", "add", "bad/name", "-i", "{photo}"], "name"),
        (["import", "{folder}"], "not an image"),
    ],
    ids=["missing-image", "bad-name", "import-with-a-broken-image"],
)
def test_a_refused_first_add_makes_no_store(rap, photos, tmp_path, command, message):
    folder = tmp_path / "to-import" / "bo"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    filled = [part.format(missing=tmp_path / "nowhere.jpg", photo=photos / "dog_00.jpg", folder=folder.parent) for part in command]
    code, _, err = rap(*filled)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "db").exists()

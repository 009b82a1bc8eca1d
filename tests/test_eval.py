"""`rap eval` end to end: outputs, resume, baselines, bad input (tiny encoder, echo backend)."""

import json
import re
import shutil

import pytest

from rap.cli import run
from test_datasets import concept_database, copy_photos, recognition_list, visual_qa


@pytest.fixture
def rap(capsys, tmp_path):
    def invoke(*args):
        code = run(["--encoder", "tiny", "--faces", "none", "--detector", "multiscale", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def dreambooth(tmp_path, photos):
    """The DreamBooth layout, from the test photos: three subjects, two to three photos each."""
    root = tmp_path / "dreambooth"
    for subject in ("dog", "cat", "teapot"):
        (root / subject).mkdir(parents=True)
        for n, photo in enumerate(sorted(photos.glob(f"{subject}_*.jpg"))):
            shutil.copy(photo, root / subject / f"{n:02d}.jpg")
    (root / "prompts_and_classes.txt").write_text("subject_name,class\ndog,dog\ncat,cat\nteapot,teapot\n")
    return root


def test_retrieval_against_database_size_with_plots_and_resume(rap, dreambooth, photos, tmp_path):
    distractors = tmp_path / "distractors"
    copy_photos(photos, distractors, {f"d{n}.jpg": name for n, name in enumerate(["clock_00.jpg", "clock_01.jpg", "astronaut.jpg"])})
    out = tmp_path / "out"
    args = ["eval", "retrieval", dreambooth, "--out", out, "--distractors", distractors, "--sizes", "3,6", "--json"]
    code, stdout, _ = rap(*args)
    summary = json.loads(stdout)
    assert code == 0 and summary["concepts"] == 3 and summary["items"] == 4
    assert set(summary["variants"]) == {f"{mode}@{n}" for mode in ("image", "regions", "both") for n in (3, 6)}
    assert summary["variants"]["both@6"]["n"]["mean"] == 6 and summary["variants"]["image@3"]["n"]["mean"] == 3
    assert 0 <= summary["variants"]["image@3"]["recall@1"]["mean"] <= summary["variants"]["image@3"]["recall@5"]["mean"] <= 1
    for name in ("config.json", "results.json", "report.md", "recall_vs_n.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["items"]) == 4 * 6 and "machine" in results["config"] and "versions" in results["config"]
    assert "![recall_vs_n.png](recall_vs_n.png)" in (out / "report.md").read_text()
    # the default decision beside recall: acceptance, false matches (no photo of none of them here), the point in force
    assert 0 <= summary["variants"]["both@3"]["acceptance"]["mean"] <= 1 and summary["variants"]["both@3"]["false matches"]["mean"] is None
    assert "image distance <=" in summary["operating_points"]["both@3"] and "Operating point in force" in (out / "report.md").read_text()

    # an interrupted run (the journal cut mid-line) resumes without redoing finished items
    lines = (out / "items.jsonl").read_text().splitlines()
    (out / "items.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:15])
    code, stdout, _ = rap(*args)
    assert code == 0 and json.loads(stdout)["variants"] == summary["variants"]
    journal = (out / "items.jsonl").read_text().splitlines()
    assert len(journal) == 10 + 14 and all(json.loads(line) for line in journal)  # kept, and redone

    # other settings into the same folder are refused, not mixed
    code, _, err = rap("eval", "retrieval", dreambooth, "--out", out, "--ks", "1")
    assert code == 2 and "other settings" in err


def test_recognition_by_retriever_and_model_with_pr_curve(rap, photos, tmp_path):
    copy_photos(photos, tmp_path / "images" / "bo", {"1.jpg": "dog_01.jpg"})
    data = recognition_list(tmp_path)
    database = concept_database(tmp_path, photos)
    out = tmp_path / "out"
    code, stdout, err = rap(
        "eval", "recognition", data, "--images-root", tmp_path / "images", "--database", database,
        "--mode", "both", "--backend", "echo", "--out", out, "--json",
    )  # fmt: skip
    summary = json.loads(stdout)
    assert code == 0, err
    assert set(summary["variants"]) == {"retriever", "model"}
    assert summary["variants"]["model"]["positive"]["mean"] == 0  # the echo model never says yes
    assert "retriever_curve" in summary and (out / "recognition_pr.png").exists()
    rows = json.loads((out / "results.json").read_text())["items"]
    for variant in ("retriever", "model"):  # each item says whether it was right, and those add up to the score
        positives = [row for row in rows if row["variant"] == variant and row["truth"]]
        assert sum(row["right"] for row in positives) / len(positives) == pytest.approx(summary["variants"][variant]["positive"]["mean"], abs=1e-4)


def test_eval_writes_no_secret(rap, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("RAP_GENERATOR_OPTIONS", json.dumps({"api_key": "sk-VERYSECRET", "auth_token": "tok-VERYSECRET", "timeout": 5}))
    copy_photos(photos, tmp_path / "images" / "bo", {"1.jpg": "dog_01.jpg"})
    out = tmp_path / "out"
    code, stdout, err = rap(
        "eval", "recognition", recognition_list(tmp_path), "--images-root", tmp_path / "images",
        "--database", concept_database(tmp_path, photos), "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    written = {path.name: path.read_text(errors="replace") for path in out.rglob("*") if path.is_file() and path.suffix in (".json", ".jsonl", ".md")}
    assert {"config.json", "results.json"} <= set(written)
    assert not [name for name, text in written.items() if "VERYSECRET" in text]
    assert json.loads(written["config.json"])["settings"]["generator_options"] == {"api_key": "********", "auth_token": "********", "timeout": 5}


def test_qa_and_caption_with_baselines(rap, photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    database = concept_database(tmp_path, photos)
    out = tmp_path / "qa"
    code, stdout, err = rap("eval", "qa", data, "--images-root", tmp_path / "data", "--database", database, "--backend", "echo", "--out", out, "--json")
    summary = json.loads(stdout)
    assert code == 0, err
    assert set(summary["variants"]) == {"rap", "whole-image", "no-retrieval"}
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(row["used"] == [] for row in items if row["variant"] == "no-retrieval")
    assert any(row["used"] for row in items if row["variant"] == "rap")
    for variant in ("rap", "whole-image", "no-retrieval"):  # the parsed choice and its rightness, per item, give the score
        rows = [row for row in items if row["variant"] == variant and row["qa_kind"] == "visual"]
        assert all(row["right"] == (row["choice"] == row["truth"]) for row in rows)
        assert sum(row["right"] for row in rows) / len(rows) == pytest.approx(summary["variants"][variant]["visual"]["mean"], abs=1e-4)

    folders = tmp_path / "folders"
    copy_photos(photos, folders, {"bo/a.jpg": "dog_00.jpg", "bo/b.jpg": "dog_01.jpg", "kit/a.jpg": "cat_00.jpg", "kit/b.jpg": "cat_01.jpg"})
    code, stdout, err = rap("eval", "caption", folders, "--backend", "echo", "--out", tmp_path / "cap", "--no-baselines", "--json")
    summary = json.loads(stdout)
    assert code == 0, err
    recall = summary["variants"]["rap"]["recall"]["mean"]
    assert recall is not None and 0 <= recall <= 1


def test_missing_images_are_reported_before_anything_runs(rap, photos, tmp_path):
    data = visual_qa(tmp_path, photos)
    code, _, err = rap("eval", "qa", data, "--database", concept_database(tmp_path, photos), "--backend", "echo", "--out", tmp_path / "o")
    assert code == 2 and "image(s) are missing" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "items.jsonl").exists() or not (tmp_path / "o" / "items.jsonl").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "dance", "x"], "unknown task"),
        (["eval", "retrieval", "{db}", "--sizes", "5"], "--sizes needs --distractors"),
        (["eval", "retrieval", "{db}", "--ks", "one"], "whole numbers"),
        (["eval", "recognition", "{db}", "--mode", "psychic"], "--mode"),
    ],
)
def test_bad_eval_requests(rap, dreambooth, tmp_path, args, message):
    code, _, err = rap(*[a.format(db=dreambooth) if isinstance(a, str) else a for a in args], "--out", tmp_path / "o")
    assert code == 2 and message in err


def test_eval_options_default_to_the_request_defaults(capsys):
    from rap.cli.evaluate import MODES
    from rap.cli.options import field_default
    from rap.evaluation.session import EvalRequest

    assert run(["eval", "--help"]) == 0
    shown = re.sub(r"[\s│]", "", capsys.readouterr().out)  # the help table wraps anywhere

    def default_of(flag, next_flag):
        return shown.split(flag, 1)[1].split(next_flag, 1)[0]

    assert f"[default:{','.join(map(str, field_default(EvalRequest, 'ks')))}]" in default_of("--ks", "--distractors")
    assert f"[default:{field_default(EvalRequest, 'repeats')}]" in default_of("--repeats", "--seed")
    mode = next(name for name, modes in MODES.items() if modes == field_default(EvalRequest, "recognition_modes"))
    assert f"[default:{mode}]" in default_of("--mode", "--baselines")


def test_retrieval_asks_each_photo_its_three_ways_in_a_row(tmp_path):
    """So that the crops the three ways share are embedded once (the encoder remembers a few photos)."""
    from rap.evaluation.items import EvalItem
    from rap.evaluation.runner import EvalConfig, _order
    from rap.settings import Settings

    items = [EvalItem(f"q{n}", "retrieval") for n in range(2)]
    config = EvalConfig("retrieval", tmp_path, Settings(), sizes=(10, 20))
    order = [(variant, item.id) for variant, item in _order(config, items)]
    assert order == [
        (f"{mode}@{size}", item) for size in (10, 20) for item in ("q0", "q1") for mode in ("image", "regions", "both")
    ]

"""A command an error message suggests runs as printed: followed literally, it fixes what failed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("transformers")
from test_llava import PHOTOS, original_checkpoint, tower  # noqa: E402,F401  (tower is a fixture)

from rap.cli import run  # noqa: E402


@pytest.mark.slow  # builds and converts a tiny original-format LLaVA
def test_an_original_llava_checkpoint_says_how_to_convert_it(tmp_path: Path, tower: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    original_checkpoint(tmp_path / "original", tower, vision_inside=False, weights_format="safetensors")
    db = ["--db", str(tmp_path / "db"), "--encoder", "tiny", "--faces", "none", "--detector", "none"]
    run([*db, "concept", "add", "bo", "-i", str(PHOTOS / "dog_00.jpg")])
    capsys.readouterr()
    ask = [*db, "ask", str(PHOTOS / "dog_01.jpg"), "Who?", "--backend", "llava", "--json"]
    assert run([*ask, "--model", str(tmp_path / "original")]) == 6
    err = capsys.readouterr().err
    [suggested] = re.findall(r"'(rap [^']+)'", err)
    assert run(shlex.split(suggested)[1:]) == 0
    model = re.search(r"--model (\S+)", err).group(1)
    capsys.readouterr()
    assert run([*ask, "--model", *shlex.split(model)]) == 0 and "answer" in json.loads(capsys.readouterr().out)

"""Reading images: only regular files, never more than the limits, reduced when asked."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from rap.cli import run
from rap.errors import InvalidImage
from rap.images import MAX_FILE_BYTES, MAX_PIXELS, check_image, load_image, reduced


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` pixels but holds almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _bad(kind: str, tmp_path: Path) -> Path:
    if kind == "dev-zero":
        return Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "pipe.jpg"
        os.mkfifo(path)
        return path
    if kind == "folder":
        return tmp_path
    if kind == "missing":
        return tmp_path / "missing.jpg"
    if kind == "empty":
        (tmp_path / "empty.jpg").write_bytes(b"")
        return tmp_path / "empty.jpg"
    if kind == "too-many-bytes":
        path = tmp_path / "huge.jpg"
        with path.open("wb") as handle:
            handle.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
        return path
    if kind == "too-many-pixels":
        return _png_header(tmp_path / "bomb.png", 8001, 8001)
    if kind == "not-an-image":
        (tmp_path / "text.jpg").write_text("garbage")
        return tmp_path / "text.jpg"
    raise AssertionError(kind)


BAD = {
    "dev-zero": "not a regular file",
    "fifo": "not a regular file",
    "folder": "is a folder",
    "missing": "no such file",
    "empty": "empty",
    "too-many-bytes": "MiB limit",
    "too-many-pixels": "pixel limit",
    "not-an-image": "not an image",
}


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="needs a POSIX system")
@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("read", [check_image, load_image], ids=["check", "load"])
def test_bad_files_are_refused_in_one_line_without_reading_them(kind, read, tmp_path):
    with pytest.raises(InvalidImage, match=BAD[kind]):
        read(_bad(kind, tmp_path))


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="needs a POSIX system")
@pytest.mark.parametrize("kind", sorted(BAD))
def test_retrieve_checks_every_file_before_any_work(kind, tmp_path, photos, capsys):
    db = tmp_path / "db"
    options = ["--db", str(db), "--encoder", "tiny", "--faces", "none", "--detector", "none"]
    assert run([*options, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg")]) == 0
    capsys.readouterr()
    code = run([*options, "retrieve", "--json", str(photos / "dog_00.jpg"), str(_bad(kind, tmp_path))])
    out, err = capsys.readouterr()
    assert code == 2 and BAD[kind] in err and err.count("\n") == 1 and "Traceback" not in err
    assert out == ""  # the good photo before it was not retrieved either


def test_check_reads_the_header_only(tmp_path):
    checked = check_image(_png_header(tmp_path / "big.png", 4000, 3000))  # its pixels are missing
    assert (checked.format, checked.size) == ("PNG", (4000, 3000))
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        checked.load()
    assert MAX_PIXELS < 8001 * 8001


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_reduced_decode_keeps_the_full_size_and_orientation(fmt, tmp_path):
    path = tmp_path / f"wide.{fmt.lower()}"
    image = Image.new("RGB", (1600, 1000), "red")
    image.paste((0, 0, 255), (0, 0, 800, 1000))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: upright it is 1000 x 1600, blue on top
    image.save(path, fmt, exif=exif)
    loaded = load_image(path, shorter_side=250)
    assert loaded.size == (1000, 1600) and loaded.image.size == (250, 400)
    assert loaded.image.getpixel((125, 20))[2] > 200 and loaded.image.getpixel((125, 380))[0] > 200
    assert load_image(path).image.size == (1000, 1600)
    picture, size = reduced(path, 500)
    assert picture.size == (500, 800) and size == (1000, 1600)


def test_a_panorama_is_reduced_to_a_bounded_number_of_pixels(tmp_path):
    path = tmp_path / "panorama.png"
    Image.new("RGB", (6400, 100)).save(path)
    loaded = load_image(path, shorter_side=100)
    assert loaded.size == (6400, 100) and loaded.image.width * loaded.image.height <= 4 * 100 * 100


def test_retrieve_reports_boxes_in_the_photos_own_pixels(tmp_path, photos, capsys, monkeypatch):
    big = tmp_path / "big.jpg"
    Image.open(photos / "dog_00.jpg").resize((1024, 768)).save(big)
    options = ["--db", str(tmp_path / "db"), "--encoder", "tiny", "--faces", "none", "--detector", "multiscale"]
    assert run([*options, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("RAP_IMAGE_SIDE", "96")  # regions are cut from a 128 x 96 copy
    assert run([*options, "retrieve", "--json", "--threshold", "inf", str(big)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_size"] == [1024, 768]
    assert result["regions"][0]["box"] == [0, 0, 1024, 768]
    assert all(0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 768 for x0, y0, x1, y1 in (r["box"] for r in result["regions"]))
    assert max(r["box"][2] - r["box"][0] for r in result["regions"][1:]) > 96  # full pixels, not working ones

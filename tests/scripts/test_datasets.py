"""scripts/datasets/iconify_emoji.py: an Iconify emoji set as a captioned image folder, built
here from a fake icon package and a fake CLDR package (no network)."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import load_script
from PIL import Image

from t2i.data.captioned import CaptionedDataset

emoji = load_script("datasets/iconify_emoji")

ICONS = {  # name -> body; the box is the set's 16 x 16 unless an icon says otherwise
    "red-circle": '<circle cx="8" cy="8" r="6" fill="#f00"/>',
    "blue-square": '<rect x="2" y="2" width="12" height="12" fill="#00f"/>',
    "green-triangle": '<path d="M8 2L14 14H2z" fill="#0f0"/>',
    "waving-hand": '<rect width="16" height="16" fill="#fc0"/>',
    "waving-hand-dark": '<rect width="16" height="16" fill="#630"/>',
    "broken-icon": '<path d="M0 0 L',  # not XML: resvg cannot parse it
    "old-name": '<rect width="16" height="16" fill="#000"/>',  # hidden
}
CHARS = {
    "1f534": "red-circle",
    "1f7e6": "blue-square",
    "1f44b": "waving-hand",
    "1f44b-1f3ff": "waving-hand-dark",  # a skin-tone variant
}
CLDR = {
    "🔴": {"default": ["circle", "geometric", "red"], "tts": ["red circle"]},
    "🟦": {"default": ["blue", "square"], "tts": ["Blue Square"]},
}
WRITTEN = {"red-circle", "blue-square", "green-triangle", "waving-hand"}


def fake_icon_package(root: Path) -> Path:
    """An unpacked @iconify-json package (package/ folder) with the icons above."""
    icons = {name: {"body": body} for name, body in ICONS.items()}
    icons["old-name"]["hidden"] = True
    icons["green-triangle"].update(width=16, height=16)
    data = {"prefix": "fake-emoji", "icons": icons, "width": 16, "height": 16}
    data["aliases"] = {"big-red-circle": {"parent": "red-circle"}}
    info = {"name": "Fake Emoji", "author": {"name": "Test Author", "url": "https://example.org"}}
    info["license"] = {"title": "MIT", "spdx": "MIT", "url": "https://example.org/LICENSE"}
    meta = {"name": "@iconify-json/fake-emoji", "version": "9.8.7", "license": "MIT"}
    files = {"icons.json": data, "chars.json": CHARS, "info.json": info, "package.json": meta}
    package = root / "package"
    package.mkdir(parents=True)
    for name, value in files.items():
        (package / name).write_text(json.dumps(value), encoding="utf-8")
    (package / "LICENSE").write_text("MIT License\nCopyright (c) Test Author\n")
    return root


def fake_cldr_package(root: Path) -> Path:
    """An unpacked cldr-annotations-full package with English annotations for two icons."""
    file = root / "package" / "annotations" / "en" / "annotations.json"
    file.parent.mkdir(parents=True)
    annotations = {"annotations": {"identity": {"language": "en"}, "annotations": CLDR}}
    file.write_text(json.dumps(annotations, ensure_ascii=False), encoding="utf-8")
    meta = {"name": "cldr-annotations-full", "version": "48.2.0", "license": "Unicode-3.0"}
    (root / "package" / "package.json").write_text(json.dumps(meta))
    (root / "package" / "LICENSE").write_text("UNICODE LICENSE V3\n")
    return root


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("packages")
    return fake_icon_package(root / "icons"), fake_cldr_package(root / "cldr")


@pytest.fixture(scope="module")
def built(packages, tmp_path_factory) -> tuple[Path, str]:
    """The folder one run wrote at 48 x 48, and what it printed to stderr."""
    out = tmp_path_factory.mktemp("built") / "emoji"
    args = [str(out), "--size", "48", "--from", str(packages[0]), "--cldr", str(packages[1])]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert emoji.main(args) == 0
    return out, err.getvalue()


def rows(out: Path) -> dict[str, dict]:
    lines = (out / "metadata.jsonl").read_text().splitlines()
    return {row["name"]: row for row in map(json.loads, lines)}


def test_the_folder_is_a_captioned_data_set_with_name_and_cldr_captions(built):
    out, _ = built
    data = CaptionedDataset(out, image_size=32)
    assert len(data) == len(WRITTEN)
    assert all(len(record["caption"]) >= 2 for record in data.records)
    assert data[0]["pixel_values"].shape == (3, 32, 32)
    red = rows(out)["red-circle"]["caption"]
    assert "circle, geometric, red" in red and "a red circle emoji" in red
    assert "blue square" in rows(out)["blue-square"]["caption"]  # CLDR's name, lowercased
    assert rows(out)["green-triangle"]["caption"] == ["green triangle", "a green triangle emoji"]
    assert all(len(c.split()) < 20 and c == c.lower() for r in data.records for c in r["caption"])
    assert all(len(set(r["caption"])) == len(r["caption"]) for r in data.records)


def test_an_icon_is_drawn_at_the_size_asked_in_its_own_colour(built):
    out, _ = built
    red = Image.open(out / "images" / "red-circle.png")
    assert red.mode == "RGBA" and red.size == (48, 48)
    r, g, b, a = red.getpixel((24, 24))
    assert r > 200 and g < 50 and b < 50 and a == 255
    assert red.getpixel((1, 1))[3] == 0  # outside the circle: transparent
    blue = Image.open(out / "images" / "blue-square.png").getpixel((24, 24))
    assert blue[2] > 200 and blue[0] < 50


def test_a_broken_icon_is_reported_and_skipped_and_aliases_variants_hidden_not_written(built):
    out, err = built
    assert "broken-icon" in err
    assert {p.stem for p in (out / "images").glob("*.png")} == WRITTEN
    assert set(rows(out)) == WRITTEN  # no big-red-circle, waving-hand-dark nor old-name


def test_license_md_names_the_packages_licences_versions_and_the_command(built, packages):
    out, _ = built
    text = (out / "LICENSE.md").read_text()
    assert "@iconify-json/fake-emoji@9.8.7" in text and "MIT" in text and "Test Author" in text
    assert "cldr-annotations-full@48.2.0" in text and "Unicode-3.0" in text
    assert f"--from {packages[0]}" in text
    copied = out / "licenses" / "iconify-json-fake-emoji-LICENSE"
    assert copied.read_text() == (packages[0] / "package" / "LICENSE").read_text()
    assert (out / "licenses" / "cldr-annotations-full-LICENSE").is_file()


def test_a_tgz_package_gives_the_same_folder_as_its_unpacked_copy(built, packages, tmp_path):
    tgz = tmp_path / "fake-emoji-9.8.7.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(packages[0] / "package", arcname="package")
    out = tmp_path / "out"
    args = [str(out), "--size", "48", "--from", str(tgz), "--cldr", str(packages[1])]
    assert emoji.main(args) == 0
    assert rows(out) == rows(built[0])
    same = Image.open(out / "images/red-circle.png").tobytes()
    assert same == Image.open(built[0] / "images/red-circle.png").tobytes()


def test_nothing_is_overwritten_without_force(packages, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(out), "--from", str(packages[0]), "--cldr", str(packages[1]), "--size", "16"]
    assert emoji.main(args) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert emoji.main([*args[:-1], "32"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(out) in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert emoji.main([*args[:-1], "32", "--force"]) == 0
    assert Image.open(out / "images" / "red-circle.png").size == (32, 32)


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--size", "0"], "--size"),
        (["--limit", "0"], "--limit"),
        (["--set", "nope"], "--set"),  # not a set it knows
        (["--set", "twemoji"], "--set"),  # not the set --from holds
        (["--cldr", "/no/such/cldr"], "--cldr"),
    ],
)
def test_a_bad_argument_is_one_line_naming_its_flag(packages, tmp_path, capsys, extra, flag):
    out = tmp_path / "out"
    assert emoji.main([str(out), "--from", str(packages[0]), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and flag in err and len(err.splitlines()) == 1
    assert not out.exists()

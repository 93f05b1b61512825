"""scripts/datasets/emoji_corpus.py: several emoji sets as one captioned corpus with a held-out
split, built here from fake icon packages (six styles, a few dozen icons) and a fake CLDR
package (no network)."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import load_script
from PIL import Image

from t2i.data.captioned import CaptionedDataset

corpus = load_script("datasets/emoji_corpus")

SQUARE = '<rect x="2" y="2" width="12" height="12" fill="{}"/>'
BASES = ["grinning-face", "waving-hand", "eggplant", "red-circle", "star", "red-apple"]
SETS = {  # style -> (icon name -> its code points, or None where the set has no chars.json)
    "fluent-emoji-flat": {  # chars.json; a .tgz
        "grinning-face": "1f600",
        "waving-hand": "1f44b",
        "waving-hand-medium": "1f44b-1f3fd",
        "waving-hand-dark": "1f44b-1f3ff",
        "thumbs-up": "1f44d",
        "thumbs-up-medium": "1f44d-1f3fd",
        "eggplant": "1f346",
        "red-circle": "1f534",
        "star": "2b50",
        "red-apple": "1f34e",
        "police-car": "1f693",
        "police-car-light": "1f6a8",
    },
    "fluent-emoji": {  # no chars.json: tones from fluent's name endings
        **dict.fromkeys(BASES),
        **dict.fromkeys(["waving-hand-medium", "waving-hand-dark", "thumbs-up"]),
        **dict.fromkeys(["thumbs-up-medium", "police-car", "police-car-light", "crescent-moon"]),
    },
    "twemoji": {  # chars.json, Unicode's names
        "grinning-face": "1f600",
        "waving-hand": "1f44b",
        "waving-hand-light-skin-tone": "1f44b-1f3fb",
        "waving-hand-medium-skin-tone": "1f44b-1f3fd",
        "thumbs-up": "1f44d",
        "thumbs-up-dark-skin-tone": "1f44d-1f3ff",
        "eggplant": "1f346",
        "red-circle": "1f534",
        "star": "2b50",
        "red-apple": "1f34e",
        "flag-fiji": "1f1eb-1f1ef",
        "balloon": "1f388",
    },
    "emojione": {  # no chars.json: older names
        **dict.fromkeys(BASES),
        **dict.fromkeys(["waving-hand-medium-skin-tone", "waving-hand-dark-skin-tone"]),
        **dict.fromkeys(["thumbs-up", "flag-for-fiji", "bear-face", "frog-face"]),
    },
    "emojione-monotone": dict.fromkeys([*BASES, "crescent-moon", "balloon"]),
    "fxemoji": dict.fromkeys(
        ["grinningface", "wavinghand", "aubergine", "redcircle", "star", "redapple"]
        + ["foxweary", "brokenicon"]  # one no CLDR name fits, one resvg cannot draw
    ),
}
COLOURS = dict(zip(SETS, ["#f00", "#0a0", "#00f", "#fa0", "#808", "#0aa"], strict=True))
CLDR = {  # emoji -> (name, keywords)
    "😀": ("grinning face", ["face", "grin"]),
    "👋": ("waving hand", ["hand", "wave", "waving"]),
    "👍": ("thumbs up", ["+1", "hand", "thumb", "up"]),
    "🍆": ("eggplant", ["aubergine", "vegetable"]),
    "🔴": ("red circle", ["circle", "geometric", "red"]),
    "⭐": ("star", ["star"]),
    "🍎": ("red apple", ["apple", "fruit", "red"]),
    "🌙": ("crescent moon", ["crescent", "moon"]),
    "🎈": ("balloon", ["celebration"]),
    "🚓": ("police car", ["car", "patrol", "police"]),
    "🚨": ("police car light", ["beacon", "car", "light", "police", "revolving"]),
    "🐻": ("bear", ["bear", "face"]),
    "🐸": ("frog", ["face", "frog"]),
}
TONES = {"🏻": "light", "🏽": "medium", "🏿": "dark"}
DERIVED = {"🇫🇯": ("flag: Fiji", ["flag"])}
for _tone, _name in TONES.items():
    DERIVED[f"👋{_tone}"] = (f"waving hand: {_name} skin tone", ["hand", f"{_name} skin tone"])
    DERIVED[f"👍{_tone}"] = (f"thumbs up: {_name} skin tone", ["thumb", f"{_name} skin tone"])


def fake_icon_set(root: Path, style: str, tgz: bool = False) -> Path:
    """An @iconify-json package for `style` with SETS[style]'s icons (a folder, or a .tgz),
    one hidden icon and one alias."""
    names = SETS[style]
    icons = {name: {"body": SQUARE.format(COLOURS[style])} for name in names}
    icons.get("brokenicon", {})["body"] = '<path d="M0 0 L'  # not XML
    icons["old-name"] = {"body": SQUARE.format("#000"), "hidden": True}
    info = {"name": f"Fake {style}", "author": {"name": f"{style} authors"}}
    info["license"] = {"title": "CC BY 4.0", "spdx": "CC-BY-4.0"}
    data = {"prefix": style, "icons": icons, "width": 16, "height": 16, "info": info}
    data["aliases"] = {"another-star": {"parent": "star"}}
    files = {"icons.json": data, "package.json": {"name": f"@iconify-json/{style}"}}
    files["package.json"].update(version="9.9.9", license="CC-BY-4.0")
    if any(names.values()):
        files["chars.json"] = {code: name for name, code in names.items()}
    package = root / style / "package"
    package.mkdir(parents=True)
    for name, value in files.items():
        (package / name).write_text(json.dumps(value), encoding="utf-8")
    if not tgz:
        return package.parent
    with tarfile.open(root / f"{style}.tgz", "w:gz") as tar:
        tar.add(package, arcname="package")
    return root / f"{style}.tgz"


def fake_cldr(root: Path) -> Path:
    """An unpacked CLDR package with English annotations and derived ones (tones, a flag)."""
    for folder, key, found in [
        ("annotations", "annotations", CLDR),
        ("annotationsDerived", "annotationsDerived", DERIVED),
    ]:
        annotations = {e: {"default": kw, "tts": [name]} for e, (name, kw) in found.items()}
        file = root / "package" / folder / "en" / "annotations.json"
        file.parent.mkdir(parents=True)
        data = {key: {"identity": {"language": "en"}, "annotations": annotations}}
        file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    meta = {"name": "cldr-annotations-full", "version": "48.2.0", "license": "Unicode-3.0"}
    (root / "package" / "package.json").write_text(json.dumps(meta))
    (root / "package" / "LICENSE").write_text("UNICODE LICENSE V3\n")
    return root


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> list[str]:
    """The command line's --from and --cldr arguments for the fake packages."""
    root = tmp_path_factory.mktemp("packages")
    args = ["--styles", ",".join(SETS)]
    for style in SETS:
        args += ["--from", f"{style}={fake_icon_set(root, style, tgz=style == 'twemoji')}"]
    return [*args, "--cldr", str(fake_cldr(root / "cldr"))]


def run(args: list[str]) -> tuple[int, str, str]:
    """main(args): its exit status, stdout and stderr."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code = corpus.main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def built(packages, tmp_path_factory) -> tuple[Path, str, str]:
    """The corpus one run wrote at 24 px with two drawing processes; stdout and stderr."""
    out = tmp_path_factory.mktemp("built") / "emoji"
    code, stdout, stderr = run([str(out), "--size", "24", "--jobs", "2", *packages])
    assert code == 0, stderr
    return out, stdout, stderr


def rows(out: Path) -> dict[str, dict]:
    lines = (out / "metadata.jsonl").read_text().splitlines()
    return {row["file_name"]: row for row in map(json.loads, lines)}


def row(out: Path, style: str, name: str) -> dict:
    return rows(out)[f"images/{style}/{name}.png"]


def split(out: Path) -> tuple[dict, dict[str, dict]]:
    """heldout.json and the training rows (every row it does not hold out)."""
    heldout = json.loads((out / "heldout.json").read_text())
    training = {f: r for f, r in rows(out).items() if f not in set(heldout["held_out"])}
    return heldout, training


def test_every_icon_but_aliases_hidden_and_broken_is_drawn_and_captioned(built):
    out, stdout, stderr = built
    expected = {f"images/{s}/{n}.png" for s, names in SETS.items() for n in names}
    expected.remove("images/fxemoji/brokenicon.png")
    assert set(rows(out)) == expected
    assert {p.relative_to(out).as_posix() for p in out.glob("images/*/*.png")} == expected
    assert "brokenicon" in stderr and "old-name" not in stdout + stderr
    image = Image.open(out / "images" / "twemoji" / "star.png")
    assert image.mode == "RGBA" and image.size == (24, 24)
    assert image.getpixel((12, 12)) == (0, 0, 255, 255) and image.getpixel((0, 0))[3] == 0


def test_captions_name_the_emoji_then_the_style(built):
    out, _, _ = built
    grin = row(out, "twemoji", "grinning-face")
    assert grin["caption"] == [
        "grinning face, twemoji style",
        "grinning face",
        "face, grin, twemoji style",
    ]
    assert grin["style"] == "twemoji" and grin["skin_tone"] is None
    assert grin["set"] == "@iconify-json/twemoji@9.9.9" and grin["name"] == "grinning-face"
    captions = [c for r in rows(out).values() for c in r["caption"]]
    assert all(c == c.lower() and len(c.split()) < 20 and "\u2019" not in c for c in captions)
    for style, caption in corpus.STYLES.items():
        if style in SETS:
            first = {r["caption"][0] for r in rows(out).values() if r["style"] == style}
            assert all(c.endswith(f", {caption.caption} style") for c in first)


def test_skin_tone_variants_are_kept_with_their_tone_from_chars_or_names(built):
    out, _, _ = built
    flat = row(out, "fluent-emoji-flat", "waving-hand-medium")  # by chars.json
    fluent = row(out, "fluent-emoji", "waving-hand-medium")  # by fluent's name ending
    emojione = row(out, "emojione", "waving-hand-dark-skin-tone")  # by Unicode's name
    for found, tone in [(flat, "medium"), (fluent, "medium"), (emojione, "dark")]:
        assert found["concept"] == "waving hand" and found["skin_tone"] == tone
    assert fluent["caption"][0] == "waving hand: medium skin tone, fluent 3d style"
    assert "hand, dark skin tone, emojione style" in emojione["caption"]
    light = row(out, "fluent-emoji", "police-car-light")  # a name, not police car + tone
    assert light["concept"] == "police car light" and light["skin_tone"] is None


def test_concepts_match_across_sets_with_and_without_chars(built):
    out, stdout, _ = built
    concept = {(r["style"], r["name"]): r["concept"] for r in rows(out).values()}
    assert concept["twemoji", "flag-fiji"] == concept["emojione", "flag-for-fiji"] == "flag: fiji"
    assert concept["fxemoji", "redapple"] == "red apple"  # normalised name
    assert concept["fxemoji", "aubergine"] == concept["twemoji", "eggplant"] == "eggplant"
    assert concept["emojione", "bear-face"] == "bear"  # Unicode's older name
    assert concept["fxemoji", "foxweary"] == "foxweary"  # unmatched: its own name
    fx = next(line for line in stdout.splitlines() if line.startswith("fxemoji "))
    assert fx.split()[1:3] == ["7", "1"]  # images, unmatched


def test_the_three_held_out_parts_are_disjoint_and_not_in_training(built):
    out, _, _ = built
    heldout, training = split(out)
    parts = {name: set(files) for name, files in heldout["parts"].items()}
    assert all(parts.values()) and set(heldout) >= {"seed", "cells", "concepts", "skin_tones"}
    assert sum(map(len, parts.values())) == len(set().union(*parts.values()))
    assert set().union(*parts.values()) == set(heldout["held_out"])
    assert heldout["held_out"] == sorted(heldout["held_out"]) and heldout["seed"] == 0
    assert not set(training) & set(heldout["held_out"]) and len(training) > 40


def test_a_held_out_cell_is_one_style_of_a_concept_drawn_in_five(built):
    out, _, _ = built
    heldout, training = split(out)
    assert len(heldout["cells"]) >= 5
    for concept, style in heldout["cells"]:
        mine = {f for f, r in rows(out).items() if r["concept"] == concept}
        bases = [rows(out)[f] for f in mine if rows(out)[f]["skin_tone"] is None]
        assert len({r["style"] for r in bases}) >= 5
        assert {f for f in mine if rows(out)[f]["style"] == style} <= set(heldout["parts"]["cells"])
        assert {r["file_name"] for r in bases if r["style"] != style} <= set(training)
    assert max(Counter(style for _, style in heldout["cells"]).values()) == 1  # rotated


def test_held_out_concepts_and_tones(built):
    out, _, _ = built
    heldout, training = split(out)
    assert heldout["concepts"] and not {r["concept"] for r in training.values()} & set(
        heldout["concepts"]
    )
    for concept, tone in heldout["skin_tones"]:
        assert concept not in heldout["concepts"]
        same = [r for r in rows(out).values() if (r["concept"], r["skin_tone"]) == (concept, tone)]
        assert all(r["file_name"] in heldout["held_out"] for r in same)
        kept = [r for r in training.values() if r["concept"] == concept]
        assert any(r["skin_tone"] is None for r in kept)  # the base emoji stays in training


def test_captioned_dataset_reads_the_corpus(built):
    out, _, _ = built
    data = CaptionedDataset(out, image_size=16)
    assert len(data) == len(rows(out))
    assert data[0]["pixel_values"].shape == (3, 16, 16)


def test_license_md_names_each_set_its_licence_and_image_count(built):
    out, _, _ = built
    text = (out / "LICENSE.md").read_text()
    for style in SETS:
        assert f"@iconify-json/{style}@9.9.9" in text and f"{style} authors" in text
    assert "- images: 7" in text and "CC-BY-4.0" in text and "Unicode-3.0" in text
    assert (out / "licenses" / "cldr-annotations-full-LICENSE").is_file()


def test_limit_keeps_a_few_icons_per_style_and_scales_the_split(packages, tmp_path):
    code, stdout, _ = run([str(tmp_path / "out"), "--size", "16", "--limit", "4", *packages])
    assert code == 0
    assert max(Counter(r["style"] for r in rows(tmp_path / "out").values()).values()) == 4
    assert "--heldout-concepts 150 scaled down" in stdout
    heldout, training = split(tmp_path / "out")
    assert training and set(heldout["parts"]) == {"cells", "concepts", "skin_tones"}


def test_nothing_is_overwritten_without_force(built, packages, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, _, err = run([str(out), *packages])
    assert code == 2 and err.startswith("error: OUT") and len(err.splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert run([str(out), "--size", "16", "--force", *packages])[0] == 0


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--styles", "noto"], "--styles noto"),  # kept for evaluation
        (["--from", "noto-v1=/tmp"], "--from noto-v1"),
        (["--styles", "openmoji"], "--styles openmoji"),  # CC-BY-SA without --share-alike
        (["--styles", "nope"], "--styles nope"),
        (["--from", "twemoji"], "--from twemoji"),  # no =PATH
        (["--from", "twemoji=/no/such"], "--from twemoji=/no/such"),
        (["--cldr", "/no/such/cldr"], "--cldr"),
        (["--size", "0"], "--size"),
        (["--jobs", "0"], "--jobs"),
        (["--limit", "0"], "--limit"),
        (["--heldout-tones", "-1"], "--heldout-tones"),
    ],
)
def test_a_bad_argument_is_one_line_naming_its_flag(packages, tmp_path, extra, flag):
    out = tmp_path / "out"
    code, stdout, err = run([str(out), *packages, *extra])
    assert code == 2 and err.startswith("error:") and flag in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_package_of_another_set_is_refused(packages, tmp_path):
    twemoji = next(a for a in packages if a.startswith("twemoji="))
    args = [*packages, "--from", twemoji.replace("twemoji=", "emojione=")]
    code, _, err = run([str(tmp_path / "out"), *args])
    assert code == 2 and "--from emojione=" in err and "'twemoji'" in err

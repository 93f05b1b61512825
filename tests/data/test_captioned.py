"""Custom captioned data sets: every layout, every image mode, and bad files that break nothing."""

from __future__ import annotations

import io
import json
import os

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from t2i.config import DataConfig
from t2i.data.__main__ import main as data_main
from t2i.data.captioned import CaptionedDataset, detect_format
from t2i.data.images import BadImageError, fit, load_image
from t2i.data.sets import captioned_datasets, inspect
from t2i.data.shapes import export


def png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def messy(tmp_path):
    """100 image files: 92 good shapes images and 8 of every kind of trouble (imagefolder)."""
    root = export(tmp_path / "messy", n=92, seed=0)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    good = Image.open(root / rows[0]["file_name"]).convert("RGB")
    jpeg = png_bytes(good, "JPEG")
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "zero.png": b"",
        "text.png": b"this is not an image\n",
        "cmyk.jpg": png_bytes(good.convert("CMYK"), "JPEG"),
        "deep.png": png_bytes(
            Image.fromarray(np.asarray(good.convert("L")).astype(np.uint16) * 257)
        ),
        "alpha.png": png_bytes(Image.new("RGBA", (40, 40), (255, 0, 0, 0))),
        "nocaption.png": png_bytes(good),
        "emptycaption.png": png_bytes(good),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    extra = [{"file_name": n, "caption": "a red circle"} for n in files if "caption" not in n]
    extra += [
        {"file_name": "nocaption.png"},
        {"file_name": "emptycaption.png", "caption": "  "},
        {"file_name": "missing.png", "caption": "a blue square"},
    ]
    with (root / "metadata.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    return root


def test_bad_files_are_reported_by_name_and_skipped_and_every_good_one_is_read(messy):
    data = CaptionedDataset(messy, image_size=16)
    samples = [data[i] for i in range(len(data))]
    assert all(s["pixel_values"].shape == (3, 16, 16) for s in samples)
    report = data.report()
    bad = {k.rsplit("/", 1)[-1]: v for k, v in report["bad"].items()}
    assert set(bad) == {
        "truncated.jpg",
        "zero.png",
        "text.png",
        "nocaption.png",
        "emptycaption.png",
        "missing.png",
    }
    assert bad["zero.png"] == "empty file (0 bytes)"
    assert bad["text.png"] == "not an image PIL can read"
    assert bad["truncated.jpg"].startswith("unreadable image data")
    assert bad["nocaption.png"] == "no caption" and bad["emptycaption.png"] == "empty caption"
    assert bad["missing.png"] == "file not found"
    assert report["count"] == 6
    # captioned records: 92 good, 6 odd files and 1 missing; the bad ones are skipped on read
    assert len(data) == 99
    # a bad sample's place is taken by the next readable one
    index = next(i for i, r in enumerate(data.records) if r["source"].endswith("zero.png"))
    assert torch.equal(data[index]["pixel_values"], data[index + 1]["pixel_values"])


def test_inspect_counts_sizes_captions_and_bad_files(messy, capsys):
    report = inspect(messy)
    assert report["format"] == "imagefolder" and report["readable"] == 95
    assert report["image_sizes"]["32x32"] == 94 and report["image_sizes"]["40x40"] == 1
    assert report["caption_words"]["min"] >= 2 and report["count"] == 6
    assert data_main(["inspect", str(messy)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["count"] == 6 and printed["readable"] == 95
    assert data_main(["inspect", str(messy / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_modes_are_converted_to_rgb_as_users_expect():
    gray16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert load_image(png_bytes(gray16)).getpixel((0, 0)) == (255, 255, 255)
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(png_bytes(clear), background=(0, 0, 255)).getpixel((0, 0)) == (0, 0, 255)
    half = Image.new("LA", (4, 4), (0, 128))
    assert load_image(png_bytes(half), background=(255, 255, 255)).getpixel((0, 0))[0] in (126, 127)
    palette = Image.new("P", (4, 4), 3)
    palette.putpalette([0, 0, 0] * 3 + [10, 200, 30] + [0, 0, 0] * 252)
    assert load_image(png_bytes(palette)).getpixel((0, 0)) == (10, 200, 30)
    cmyk = load_image(png_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    r, g, b = cmyk.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # red


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (8, 4), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 4, 4))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    shown = load_image(png_bytes(wide, "JPEG", exif=exif.tobytes(), quality=100))
    assert shown.size == (4, 8)
    assert shown.getpixel((2, 1))[0] > 200 and shown.getpixel((2, 6))[0] < 50  # top half white


def test_decompression_bombs_are_refused(monkeypatch):
    monkeypatch.setattr("t2i.data.images.MAX_PIXELS", 100)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(png_bytes(Image.new("RGB", (20, 20))))


def test_fit_resizes_the_short_side_and_crops_centre_or_at_random():
    image = Image.new("RGB", (60, 30))
    image.paste((255, 0, 0), (0, 0, 30, 30))
    centre = fit(image, 10)
    assert (
        centre.size == (10, 10)
        and centre.getpixel((0, 5))[0] > 200
        and centre.getpixel((9, 5))[0] < 50
    )
    crops = {fit(image, 10, True, torch.Generator().manual_seed(s)).tobytes() for s in range(8)}
    assert len(crops) > 1


def test_text_pairs_layout_with_nested_folders_and_caption_lists(tmp_path):
    root = tmp_path / "pairs"
    (root / "a" / "b").mkdir(parents=True)
    for i, folder in enumerate([root, root / "a", root / "a" / "b"]):
        Image.new("RGB", (20, 20), (i * 100, 0, 0)).save(folder / f"{i}.jpg")
    (root / "0.txt").write_text("a red circle\n")
    (root / "a" / "1.txt").write_text("a blue square\nthe blue square\n")
    assert detect_format(root) == "text_pairs"
    data = CaptionedDataset(root, image_size=8)
    assert len(data) == 2 and data.report()["count"] == 1  # 2.jpg has no .txt
    random_captions = {data[1]["caption"] for _ in range(20)}
    assert random_captions == {"a blue square", "the blue square"}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_name_images_relative_to_their_folder(tmp_path, suffix):
    root = export(tmp_path / "imgs", n=4, seed=0)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    table = datasets.Dataset.from_dict(
        {"path": [f"imgs/{r['file_name']}" for r in rows], "text": [r["caption"] for r in rows]}
    )
    file = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        table.to_parquet(str(file))
    else:
        table.to_csv(str(file), sep="\t" if suffix == ".tsv" else ",", index=False)
    data = CaptionedDataset(file, image_size=32)
    assert data.format == "table" and len(data) == 4
    assert data[2]["caption"] == rows[2]["caption"]
    want = torch.from_numpy(np.array(Image.open(root / rows[2]["file_name"]).convert("RGB")))
    got = ((data[2]["pixel_values"] + 1) * 127.5).round().permute(1, 2, 0)
    assert torch.equal(got.to(torch.uint8), want)


def test_a_saved_datasets_folder_with_image_bytes(tmp_path):
    images = [Image.new("RGB", (12, 12), (0, 200, 0)), Image.new("RGB", (12, 12), (0, 0, 200))]
    table = datasets.Dataset.from_dict({"image": images, "caption": ["green", "blue"]})
    table = table.cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "saved"))
    data = CaptionedDataset(tmp_path / "saved", image_size=12)
    assert data.format == "saved" and data[1]["caption"] == "blue"
    assert data[1]["pixel_values"][2].mean() > 0.5  # blue channel


def test_an_imagefolder_rows_plain_fields_are_kept_in_its_records_meta(tmp_path):
    root = tmp_path / "styled"
    (root / "images").mkdir(parents=True)
    rows = [
        {"file_name": "images/a.png", "caption": ["a face, flat", "a face"], "style": "flat"},
        {"file_name": "images/b.png", "caption": "b", "style": "3d", "skin_tone": None, "n": 2},
    ]
    rows[1]["spec"] = {"shape": "circle"}  # an object: not a plain field
    for row in rows:
        Image.new("RGB", (8, 8), (200, 0, 0)).save(root / row["file_name"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = CaptionedDataset(root, image_size=8)
    assert [r["meta"] for r in data.records] == [
        {"style": "flat"},  # neither the caption column nor the image column
        {"style": "3d", "skin_tone": None, "n": 2},
    ]
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    Image.new("RGB", (8, 8)).save(pairs / "x.png")
    (pairs / "x.txt").write_text("x")
    assert CaptionedDataset(pairs, image_size=8).records[0]["meta"] == {}  # no metadata rows


def test_a_data_sets_heldout_json_is_its_validation_split(tmp_path):
    root = tmp_path / "corpus"
    (root / "images").mkdir(parents=True)
    rows = [{"file_name": f"images/{i}.png", "caption": f"icon {i}"} for i in range(20)]
    for row in rows:
        Image.new("RGB", (8, 8), (10 * len(row["caption"]), 0, 0)).save(root / row["file_name"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    listed = ["images/3.png", "images/11.png", "images/12.png"]
    (root / "heldout.json").write_text(json.dumps({"held_out": listed, "parts": {"a": listed}}))
    config = DataConfig(path=str(root), image_size=8, num_val=5, check_images=False)
    train, val = captioned_datasets(config)  # heldout: auto finds the file
    assert sorted(r["source"] for r in val.records) == sorted(str(root / f) for f in listed)
    assert len(train) == 17 and not {r["source"] for r in train.records} & set(listed)
    _, drawn = captioned_datasets(DataConfig(**{**vars(config), "heldout": None}))
    assert len(drawn) == 2  # num_val 5, at most a tenth: the seeded draw, file ignored
    (root / "bad.json").write_text(json.dumps({"held_out": ["images/none.png"]}))
    with pytest.raises(ValueError, match="bad.json lists none of the 20 samples"):
        captioned_datasets(DataConfig(**{**vars(config), "heldout": str(root / "bad.json")}))


def test_unknown_layouts_and_columns_are_named(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(ValueError, match="not a captioned data set t2i reads"):
        detect_format(tmp_path / "x.bin")
    root = export(tmp_path / "imgs", n=2, seed=0)
    with pytest.raises(ValueError, match="no caption column 'title'"):
        CaptionedDataset(root, caption_column="title")


def test_training_on_a_messy_folder_goes_on_and_names_the_bad_files(messy, tmp_path, caplog):
    from t2i import train

    out = tmp_path / "run"
    argv = [
        "configs/shapes/vqvae.yaml",
        f"data.path={messy}",
        "data.num_val=2",
        "train.batch_size=8",
        "train.max_steps=4",
        "train.sample_every=100",
        f"train.output_dir={out}",
        "model.channels=[8, 16]",
        "model.num_res_blocks=1",
        "model.embed_dim=8",
        "model.codebook_size=16",
    ]
    with caplog.at_level("WARNING"):
        assert train.main(argv) == 0
    assert (out / "model" / "config.json").is_file()
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    # a tokenizer reads images alone: the images without a caption are trained on too
    assert len(summary) == 1 and summary[0].startswith("skipped 4 bad samples")
    for name in ("truncated.jpg", "zero.png", "text.png", "missing.png"):
        assert f"/{name} (" in summary[0]
    for name in ("cmyk.jpg", "deep.png", "alpha.png", "nocaption.png", "emptycaption.png"):
        assert name not in summary[0]  # odd but readable, or captionless: trained on
    assert train.main(["configs/shapes/vqvae.yaml", f"data.path={tmp_path / 'none'}"]) == 2


def write_shards(root, bad: bool = True):
    """Two WebDataset shards of shapes samples (keys s{shard}_{i}); optionally a bad sample
    (not an image) and a caption-less one in each."""
    import tarfile

    root.mkdir(parents=True, exist_ok=True)

    def add(tf, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    from t2i.data.shapes import make_sample

    for shard in range(2):
        with tarfile.open(root / f"shard-{shard}.tar", "w") as tf:
            for i in range(12):
                s = make_sample(shard * 100 + i, seed=0)
                add(tf, f"s{shard}_{i:02d}.png", png_bytes(s["image"]))
                add(tf, f"s{shard}_{i:02d}.txt", s["caption"].encode())
            if bad:
                add(tf, f"s{shard}_90.png", b"garbage")
                add(tf, f"s{shard}_90.txt", b"a red circle")
                add(tf, f"s{shard}_91.png", png_bytes(s["image"]))
    return root


def test_webdataset_shards_stream_and_skip_bad_samples(tmp_path):
    from t2i.data.webdataset import WebDatasetShards

    root = write_shards(tmp_path / "shards")
    assert (
        detect_format(root) == "webdataset" and detect_format(root / "shard-0.tar") == "webdataset"
    )
    stream = WebDatasetShards(root, image_size=16, shuffle_buffer=0)
    samples = list(stream)
    assert len(samples) == 24 and samples[0]["pixel_values"].shape == (3, 16, 16)
    assert sorted(k.rsplit(":", 1)[1] for k in stream.report()["bad"]) == [
        "s0_90",
        "s0_91",
        "s1_90",
        "s1_91",
    ]
    shuffled = WebDatasetShards(root, image_size=16, shuffle_buffer=8, seed=1)
    first = [s["caption"] for s in shuffled]
    shuffled.set_epoch(1)
    assert sorted(first) == sorted(s["caption"] for s in samples)
    assert first != [s["caption"] for s in shuffled]  # a new order each epoch
    train, val = stream.split(3)
    assert len(val) == 3 and len(list(train)) == 21
    report = inspect(root)
    assert report["format"] == "webdataset" and report["readable"] == 24 and report["count"] == 4


def test_training_streams_webdataset_shards_and_resumes(tmp_path):
    from t2i import train
    from t2i.training import read_metrics

    root = write_shards(tmp_path / "shards", bad=False)
    out = tmp_path / "run"
    argv = [
        "configs/shapes/vqvae.yaml",
        f"data.path={root}",
        "data.num_val=4",
        "train.batch_size=8",
        "train.max_steps=6",
        "train.checkpoint_every=3",
        "train.sample_every=100",
        "train.log_every=3",
        f"train.output_dir={out}",
        "model.channels=[8, 16]",
        "model.num_res_blocks=1",
        "model.embed_dim=8",
        "model.codebook_size=16",
    ]
    assert train.main(argv) == 0
    assert [r["step"] for r in read_metrics(out / "logs" / "metrics.csv")] == [3, 6]
    assert train.main([*argv, "train.max_steps=9", "train.resume=latest"]) == 0
    assert [r["step"] for r in read_metrics(out / "logs" / "metrics.csv")] == [3, 6, 9]


def test_a_prior_trains_on_the_codes_of_streamed_shards(tmp_path):
    from t2i import train

    root = write_shards(tmp_path / "shards", bad=False)
    common = [
        f"data.path={root}",
        "data.num_val=4",
        "train.batch_size=8",
        "train.sample_every=100",
        "train.log_every=2",
    ]
    vq = [
        "configs/shapes/vqvae.yaml",
        *common,
        "train.max_steps=2",
        f"output_dir={tmp_path / 'vq'}",
        "model.channels=[8, 16]",
        "model.num_res_blocks=1",
        "model.embed_dim=8",
        "model.codebook_size=16",
    ]
    assert train.main(vq) == 0
    prior = [
        "configs/shapes/pixelcnn.yaml",
        *common,
        "train.max_steps=2",
        f"output_dir={tmp_path / 'prior'}",
        f"data.tokenizer={tmp_path / 'vq'}",
        f"data.token_cache={tmp_path / 'cache'}",
        "model.num_tokens=16",
        "model.channels=8",
        "model.num_layers=2",
        "model.text_width=8",
    ]
    assert train.main(prior) == 0
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the stream's codes and the head's
    again = [*prior, f"output_dir={tmp_path / 'prior_again'}"]
    assert train.main(again) == 0  # a second run hits the cache
    assert len(list((tmp_path / "cache").iterdir())) == 2


@pytest.mark.parametrize("layout", ["webdataset", "imagefolder"])
def test_bad_samples_found_by_dataloader_workers_reach_the_report(tmp_path, messy, layout):
    from torch.utils.data import DataLoader

    from t2i.data.webdataset import WebDatasetShards

    if layout == "webdataset":
        data = WebDatasetShards(write_shards(tmp_path / "shards"), image_size=16, shuffle_buffer=0)
        expected = {"s0_90", "s0_91", "s1_90", "s1_91"}
    else:  # images are read as they are drawn, so the workers meet the bad files
        data = CaptionedDataset(messy, image_size=16)
        expected = {"truncated.jpg", "zero.png", "text.png", "nocaption.png", "emptycaption.png"}
        expected |= {"missing.png"}
    loader = DataLoader(data, batch_size=4, num_workers=2, collate_fn=lambda batch: len(batch))
    assert sum(loader) > 0
    report = data.report()
    assert {k.rsplit(":", 1)[-1].rsplit("/", 1)[-1] for k in report["bad"]} == expected
    assert report["count"] == len(expected)


def test_a_pickled_record_of_bad_samples_writes_to_the_same_log():
    import pickle

    from t2i.data.captioned import BadSamples

    bad = BadSamples()
    bad["a.png"] = "truncated"
    copy = pickle.loads(pickle.dumps(bad))  # as a spawned DataLoader worker receives it
    assert copy.log == bad.log and dict(copy) == {"a.png": "truncated"}
    copy["b.png"] = "not an image"
    copy["a.png"] = "truncated"  # known: not logged twice
    assert bad.merged() == {"a.png": "truncated", "b.png": "not an image"}
    log = bad.log
    del bad, copy
    assert not os.path.exists(log)  # the record that made the log removes it


def test_a_folder_of_images_without_captions_is_named_and_a_tokenizer_trains_on_it(
    tmp_path, capsys
):
    from t2i import train
    from t2i.data.__main__ import main as data_main

    root = tmp_path / "pictures"
    root.mkdir()
    for i in range(12):
        Image.new("RGB", (20, 24), (20 * i, 100, 30)).save(root / f"{i}.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_format(root) == "images"
    with pytest.raises(ValueError, match="an empty folder"):
        detect_format(empty)
    with pytest.raises(ValueError, match="12 images but no captions"):
        CaptionedDataset(root)
    images = CaptionedDataset(root, image_size=16, captions=False)
    assert len(images) == 12 and set(images[0]) == {"pixel_values"}
    assert data_main(["inspect", str(root)]) == 2
    assert "12 images but no captions" in capsys.readouterr().err
    run = [f"data.path={root}", "data.num_val=2", "train.batch_size=4", "train.max_steps=2"]
    tiny = ["model.channels=[8, 16]", "model.embed_dim=8", "model.codebook_size=16"]
    out = tmp_path / "tok"
    assert train.main(["configs/shapes/vqvae.yaml", *run, *tiny, f"train.output_dir={out}"]) == 0
    assert (out / "model" / "config.json").is_file()
    clip = ["configs/shapes/clip.yaml", *run, f"train.output_dir={tmp_path / 'clip'}"]
    assert train.main(clip) == 2  # CLIP reads captions: the same one-line reason
    assert "12 images but no captions" in capsys.readouterr().err


def test_caption_files_are_utf8_a_bom_dropped_and_another_encoding_skipped_by_name(tmp_path):
    for name, data in [
        ("bom", "\ufeffa red apple".encode("utf-8")),
        ("latin", "a café au lait".encode("latin-1")),
        ("plain", b"a green pear"),
    ]:
        Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_bytes(data)
    data = CaptionedDataset(tmp_path, image_size=8)
    captions = sorted(c for r in data.records for c in r["caption"])
    assert captions == ["a green pear", "a red apple"]  # no BOM, no replacement characters
    reason = data.report()["bad"][str(tmp_path / "latin.png")]
    assert "not UTF-8 text (byte 0xe9 at offset 5, line 1)" in reason and "latin.txt" in reason


def test_a_malformed_metadata_line_is_skipped_by_file_and_line_and_the_rest_read(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8), (30, 30, 200)).save(tmp_path / f"{i}.png")
    lines = [
        '\ufeff{"file_name": "0.png", "caption": "a blue square"}',
        '{"file_name": "1.png", "caption": "a blue',
        '["2.png", "a list"]',
        '{"file_name": "2.png", "caption": "a blue box"}',
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = CaptionedDataset(tmp_path, image_size=8)
    assert sorted(c for r in data.records for c in r["caption"]) == ["a blue box", "a blue square"]
    bad = data.report()["bad"]
    meta = tmp_path / "metadata.jsonl"
    assert bad[f"{meta}:2"].startswith("not JSON") and "a JSON list" in bad[f"{meta}:3"]


def test_a_caption_that_is_not_text_is_named_as_such_not_read_as_empty(tmp_path):
    for i in range(4):
        Image.new("RGB", (8, 8), (30, 30, 200)).save(tmp_path / f"{i}.png")
    rows = [
        {"file_name": "0.png", "caption": 5},
        {"file_name": "1.png", "caption": ["a blue square", {"x": 1}]},
        {"file_name": "2.png", "caption": ["a blue box", "a square"]},  # several captions
        {"file_name": "3.png", "caption": "a blue tile"},
    ]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = CaptionedDataset(tmp_path, image_size=8)
    assert sorted(c for r in data.records for c in r["caption"]) == [
        "a blue box",
        "a blue tile",
        "a square",
    ]
    bad = data.report()["bad"]
    assert bad[str(tmp_path / "0.png")] == "caption 5 (int) is not text"
    assert bad[str(tmp_path / "1.png")] == "caption {'x': 1} (dict) is not text"


def test_a_truncated_webdataset_shard_is_named_while_its_whole_samples_still_stream(tmp_path):
    from t2i.data.webdataset import WebDatasetShards

    root = write_shards(tmp_path / "shards", bad=False)
    shard = root / "shard-1.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a copy cut short
    stream = WebDatasetShards(root, image_size=16, shuffle_buffer=0)
    samples = list(stream)
    assert 12 <= len(samples) < 24  # shard 0 whole, shard 1 up to its cut
    bad = stream.report()["bad"]
    assert bad[str(shard)].startswith("truncated")  # the shard, and any sample cut in two
    assert all(k.startswith(str(shard)) for k in bad)
    assert inspect(root)["bad"][str(shard)] == bad[str(shard)]


def test_a_damaged_save_to_disk_folder_is_named(tmp_path):
    table = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8))] * 4, "text": ["a", "b", "c", "d"]}
    ).cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:300])
    with pytest.raises(ValueError, match="saved: a save_to_disk folder that does not load"):
        CaptionedDataset(tmp_path / "saved", image_size=8)


def test_a_caption_table_that_is_not_utf8_is_named_by_file_and_offset(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    table = tmp_path / "captions.csv"
    table.write_bytes(b"file_name,text\n0.png,caf\xe9\n1.png,a pot\n2.png,a cup\n")
    with pytest.raises(
        ValueError, match=r"captions.csv: not UTF-8 text \(byte 0xe9 at offset 24\)"
    ):
        CaptionedDataset(table, image_size=8)

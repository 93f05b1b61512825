"""The code-grid cache: encoded once, reused on a hit, rebuilt when the tokenizer changes."""

from __future__ import annotations

import datasets
import tiny
import torch

from t2i.data.shapes import ShapesDataset
from t2i.data.text import CaptionCollator
from t2i.data.tokens import (
    TokenDataset,
    cached_tokens,
    dense_column,
    encode_dataset,
    fingerprint,
    model_description,
)
from t2i.models import VQVAE


def patch_means(x: torch.Tensor) -> torch.Tensor:
    """A stand-in tokenizer: the sign pattern of 8 x 8 patch means, as codes 0..7: (N, 4, 4)."""
    means = torch.nn.functional.avg_pool2d(x, 8) > 0  # (N, 3, 4, 4)
    return (means[:, 0] * 4 + means[:, 1] * 2 + means[:, 2]).long()


def two_levels(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return patch_means(x)[:, ::2, ::2], patch_means(x)


def test_encode_dataset_keeps_captions_specs_and_grids():
    images = ShapesDataset(n=10, seed=3)
    data = TokenDataset(encode_dataset(images, patch_means, batch_size=4))
    assert len(data) == 10
    item = data[7]
    source = images[7]
    assert item["caption"] == source["caption"] and item["spec"] == source["spec"]
    assert torch.equal(item["image_tokens"], patch_means(source["pixel_values"][None])[0])
    assert item["image_tokens"].dtype == torch.int64


def test_the_whole_column_read_gives_each_row_as_the_row_read_does(tmp_path):
    images = ShapesDataset(n=12, seed=2)
    extras = {"latents": lambda b: b["pixel_values"][:, :, ::8, ::8] * 3}  # (N, 3, 4, 4)
    encoded = encode_dataset(images, patch_means, batch_size=5, extras=extras)
    encoded.save_to_disk(tmp_path / "cache")  # as the cache reads it: memory-mapped
    fast = TokenDataset(datasets.load_from_disk(tmp_path / "cache"))
    rowwise = TokenDataset(encoded.select(range(11, -1, -1)))  # index-mapped: row by row
    assert set(fast.arrays) == {"tokens", "latents"} and not rowwise.arrays
    for i in (0, 5, 11):
        a, b = fast[i], rowwise[11 - i]
        assert torch.equal(a["image_tokens"], b["image_tokens"])
        assert a["image_tokens"].dtype == torch.int64 and a["latents"].dtype == torch.float32
        assert torch.equal(a["latents"], b["latents"]) and a["caption"] == b["caption"]
    ragged = datasets.Dataset.from_dict(
        {"caption": ["a", "b"], "spec": ["{}"] * 2, "emb": [[1.0, 2.0], [3.0]]}
    )
    assert dense_column(ragged, "emb") is None
    assert TokenDataset(ragged)[1]["emb"].tolist() == [3.0]


def test_two_level_grids_come_back_as_a_tuple_and_collate():
    data = TokenDataset(encode_dataset(ShapesDataset(n=6, seed=0), two_levels, batch_size=4))
    top, bottom = data[0]["image_tokens"]
    assert top.shape == (2, 2) and bottom.shape == (4, 4)
    batch = CaptionCollator(16)([data[i] for i in range(3)])
    assert [t.shape for t in batch["image_tokens"]] == [(3, 2, 2), (3, 4, 4)]
    assert batch["input_ids"].shape == (3, 16) and len(batch["spec"]) == 3


def test_cache_hits_rebuilds_on_a_new_key_and_drops_the_stale_entry(tmp_path):
    images = ShapesDataset(n=5, seed=1)
    calls = []

    def build():
        calls.append(1)
        return encode_dataset(images, patch_means)

    weights = {"w": torch.ones(3)}
    key = fingerprint(weights.items(), images.description)
    first = cached_tokens(tmp_path, key, "tok-A", build)
    again = cached_tokens(tmp_path, key, "tok-A", build)
    assert len(calls) == 1 and again["caption"] == first["caption"]

    changed = fingerprint({"w": torch.tensor([1.0, 1.0, 2.0])}.items(), images.description)
    assert changed != key
    cached_tokens(tmp_path, changed, "tok-A", build)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [changed]  # old entry gone, no tmp left


def test_a_damaged_cache_entry_is_encoded_again_not_read(tmp_path, caplog):
    images = ShapesDataset(n=5, seed=1)
    calls = []

    def build():
        calls.append(1)
        return encode_dataset(images, patch_means)

    key = fingerprint({"w": torch.ones(3)}.items(), images.description)
    captions = list(cached_tokens(tmp_path, key, "tok-A", build)["caption"])
    arrow = next((tmp_path / key).glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:200])  # a disk that filled up
    again = cached_tokens(tmp_path, key, "tok-A", build)
    assert len(calls) == 2 and list(again["caption"]) == captions
    assert f"token cache: {tmp_path / key} is damaged" in caplog.text


def test_fingerprint_depends_on_the_data_description():
    weights = {"w": torch.ones(3)}.items()
    a = fingerprint(weights, ShapesDataset(n=5, seed=1).description)
    b = fingerprint(weights, ShapesDataset(n=5, seed=2).description)
    assert a != b


def test_a_model_keys_the_same_from_any_folder(tmp_path):
    VQVAE(**tiny.VQ).save_pretrained(tmp_path / "a")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    keys = set()
    for folder in ("a", "b"):
        model = VQVAE.from_pretrained(tmp_path / folder)
        assert folder in str(model.config._name_or_path)  # diffusers records where it read
        keys.add(fingerprint(model.state_dict().items(), model_description(model)))
    assert len(keys) == 1

"""What a model reads, prepared: classifier-free guidance's caption drop reaches the model in
training steps (through the trainer, as `t2i.train` wires it) and never in validation."""

from __future__ import annotations

import tiny
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch.utils.data import Dataset

from t2i.config import TrainConfig
from t2i.data.text import CaptionCollator
from t2i.models import CLIPModel
from t2i.training import Trainer
from t2i.training.inputs import CaptionDropped, CaptionFeatures, prepare


class Captions(Dataset):
    """Non-empty captions, one per sample."""

    def __init__(self, n: int) -> None:
        self.captions = [f"a red circle number {i}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict:
        return {"caption": self.captions[i], "x": torch.zeros(2)}


class Reader(ModelMixin, ConfigMixin):
    """Counts, per training step, the rows whose CLIP states are the empty caption's."""

    @register_to_config
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.empty_states: torch.Tensor | None = None
        self.seen: list[tuple[int, int]] = []  # (empty rows, rows) per step

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        states = batch["text_states"]
        empty = (states - self.empty_states).abs().flatten(1).amax(1) < 1e-5
        self.seen.append((int(empty.sum()), len(states)))
        return {"loss": self.w**2 + states.mean() * 0}


def test_caption_dropped_replaces_about_p_of_the_captions_and_keeps_the_rest():
    data = CaptionDropped(Captions(50), 0.25)
    reads = []
    for epoch in range(40):
        data.set_epoch(epoch)
        reads += [data[i] for i in range(50)]
    dropped = sum(r["caption"] == "" for r in reads)
    assert 400 < dropped < 600  # 500 expected, sd ~19
    assert all(
        r["caption"] == f"a red circle number {i % 50}" for i, r in enumerate(reads) if r["caption"]
    )


def test_a_dropped_caption_depends_on_seed_epoch_and_index_not_on_who_reads_it_or_when():
    """Two processes (or workers) reading halves of an epoch, in any order, drop what one
    reader drops; the next epoch draws anew, and so does another seed."""

    def dropped(data, epoch, order):
        data.set_epoch(epoch)
        return {i for i in order if data[i]["caption"] == ""}

    one = CaptionDropped(Captions(64), 0.3, seed=5)
    first, second = CaptionDropped(Captions(64), 0.3, seed=5), CaptionDropped(Captions(64), 0.3, 5)
    torch.manual_seed(1)  # the global generator plays no part
    halves = dropped(first, 2, range(1, 64, 2)) | dropped(second, 2, reversed(range(0, 64, 2)))
    assert halves == dropped(one, 2, range(64)) and 0 < len(halves) < 64
    assert dropped(one, 3, range(64)) != halves
    assert dropped(CaptionDropped(Captions(64), 0.3, seed=6), 2, range(64)) != halves


def test_training_steps_read_dropped_captions_and_validation_reads_none(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(**tiny.CLIP).eval()
    prepared = prepare(
        frozenset({"text_states"}),
        Captions(64),
        Captions(8),
        str(tmp_path / "cache"),
        clip=clip,
        caption_drop_prob=0.3,
    )
    model = Reader()
    model.empty_states = clip.text_features(clip.tokenize([""], allow_empty=True)).states
    config = TrainConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=12,
        batch_size=16,
        log_every=100,
        sample_every=1000,
        checkpoint_every=1000,
        num_samples=4,
    )
    Trainer(
        model,
        config,
        prepared.train_set,
        CaptionCollator(32),
        batch_transform=prepared.batch_transform,
    ).train()
    empty, rows = map(sum, zip(*model.seen, strict=True))
    assert rows == 12 * 16
    assert 0.15 < empty / rows < 0.45  # 0.3 expected; the grad-mode proxy it replaced gave 0

    val = CaptionCollator(32)([prepared.val_set[i] for i in range(8)])
    model.seen.clear()
    with torch.no_grad():
        model.training_losses(prepared.batch_transform(val))
    assert model.seen == [(0, 8)]


def test_caption_features_are_computed_once_per_caption_and_match_a_direct_pass():
    clip = CLIPModel(**tiny.CLIP).eval().requires_grad_(False)
    calls = []
    direct = clip.text_features
    clip.text_features = lambda ids: calls.append(len(ids)) or direct(ids)
    features = CaptionFeatures(clip, embeds=True)
    captions = ["a red circle", "a blue square", "a red circle", ""]
    ids = clip.tokenize(captions, allow_empty=True)
    first = features({"input_ids": ids})
    again = features({"input_ids": ids.flip(0)})  # every caption seen: no text pass
    assert calls == [4]
    reference = direct(ids)
    torch.testing.assert_close(first["text_states"], reference.states)
    torch.testing.assert_close(first["text_embeds"], reference.embeds)
    torch.testing.assert_close(again["text_states"], reference.states.flip(0))
    full = CaptionFeatures(clip, max_bytes=0)  # no room: computed every time, still right
    full({"input_ids": ids})
    out = full({"input_ids": ids})
    assert calls == [4, 4, 4] and not full.kept
    torch.testing.assert_close(out["text_states"], reference.states)

"""CLIP with a pretrained Hugging Face text tower from a local folder (a tiny BERT saved with
transformers at test time): its weights are the folder's, a locked tower never trains while
the image tower does, it saves apart (byte for byte the same when unchanged) and loads
without the original folder, and training tokenises captions with its tokenizer."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_bert
from tiny import CLIP as TINY_CLIP
from transformers import BertModel

from t2i.data.text import CaptionCollator
from t2i.models import CLIPModel, DALLEPrior
from t2i.train import caption_collator

WORDS = "a an red green blue apple face grinning happy smiling cat dog style twemoji , :".split()
VISION = {k: v for k, v in TINY_CLIP.items() if not k.startswith("text_")}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A tiny BERT (2 layers, width 24) and its WordPiece tokenizer, saved as transformers
    saves them."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), WORDS)


def tiny_clip(folder: Path, lock: bool = True) -> CLIPModel:
    torch.manual_seed(0)
    clip = CLIPModel(**VISION, text_model=str(folder), lock_text=lock)
    clip.load_pretrained_parts()
    return clip


def batch(clip: CLIPModel, n: int = 4) -> dict:
    captions = ["a red apple", "a grinning face", "a happy cat", "a blue dog, twemoji style"]
    return {"pixel_values": torch.rand(n, 3, 16, 16) * 2 - 1, "input_ids": clip.tokenize(captions)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tower_holds_the_folders_weights_and_tokenizer(bert_dir):
    clip = tiny_clip(bert_dir).eval()
    reference = BertModel.from_pretrained(bert_dir).eval()
    ids = clip.tokenize(["a grinning face", "a red apple, twemoji style"])
    assert ids.shape == (2, clip.config.context_length)
    assert ids[0, 0].item() == 2  # [CLS] of the folder's vocabulary, not open_clip's BPE
    features = clip.text_features(ids)
    with torch.no_grad():
        states = reference(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    assert features.mask.sum(1).tolist() == [5, 8]  # [CLS] words [SEP], padding masked
    real = features.mask
    torch.testing.assert_close(features.states[real], states[real])
    assert not features.states[~real].any()  # padding: zeros, whatever the batch
    assert clip.text_width == 24 and features.states.shape[-1] == 24
    torch.testing.assert_close(clip.encode_text(ids), features.embeds)
    torch.testing.assert_close(features.embeds.norm(dim=-1), torch.ones(2))


def test_locked_tower_does_not_train_while_the_image_tower_does(bert_dir):
    clip = tiny_clip(bert_dir, lock=True).train()
    tower = {k: v.clone() for k, v in clip.text_tower.state_dict().items()}
    image = {k: v.clone() for k, v in clip.model.visual.state_dict().items()}
    proj = clip.model.text.proj.weight.clone()
    optimizer = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=1e-2)
    loss = clip.training_losses(batch(clip))["loss"]
    loss.backward()
    optimizer.step()
    assert all(torch.equal(v, clip.text_tower.state_dict()[k]) for k, v in tower.items())
    changed = [k for k, v in clip.model.visual.state_dict().items() if not torch.equal(v, image[k])]
    assert changed, "the image tower did not train"
    assert not torch.equal(proj, clip.model.text.proj.weight), "the text projection did not train"


def test_unlocked_tower_trains(bert_dir):
    clip = tiny_clip(bert_dir, lock=False).train()
    before = clip.text_tower.embeddings.word_embeddings.weight.clone()
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-2)
    clip.training_losses(batch(clip))["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, clip.text_tower.embeddings.word_embeddings.weight)


def test_locked_tower_runs_without_dropout_in_training_mode(bert_dir):
    clip = tiny_clip(bert_dir, lock=True).train()
    ids = batch(clip)["input_ids"]
    torch.manual_seed(1)
    first = clip.text_features(ids).states
    torch.manual_seed(2)
    assert torch.equal(first, clip.text_features(ids).states)
    assert clip.model.visual.training  # the image tower still trains in training mode


def test_save_load_without_the_original_folder(bert_dir, tmp_path):
    source = tmp_path / "bert"
    shutil.copytree(bert_dir, source)
    clip = tiny_clip(source).eval()
    ids, x = batch(clip)["input_ids"], torch.rand(2, 3, 16, 16)
    expected = clip.tokenize(["a happy cat"])
    clip.save_pretrained(tmp_path / "a")
    clip.save_pretrained(tmp_path / "b")
    tower = Path("text_model") / "model.safetensors"
    assert sha(tmp_path / "a" / tower) == sha(tmp_path / "b" / tower)  # stored once in git
    shutil.rmtree(source)
    loaded = CLIPModel.from_pretrained(tmp_path / "a").eval()
    assert torch.equal(loaded.tokenize(["a happy cat"]), expected)
    assert torch.equal(loaded.text_features(ids).embeds, clip.text_features(ids).embeds)
    assert torch.equal(loaded.encode_image(x), clip.encode_image(x))
    assert not any(p.requires_grad for p in loaded.text_tower.parameters())  # still locked
    half = CLIPModel.from_pretrained(tmp_path / "a", torch_dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="text_model=.*nowhere.*no such folder"):
        CLIPModel(**VISION, text_model=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="lock_text"):
        CLIPModel(**VISION, lock_text=True)


def test_training_tokenises_with_the_reading_clips_tokenizer(bert_dir):
    clip = tiny_clip(bert_dir)
    bpe = CaptionCollator(32)
    ids = caption_collator(bpe, clip, {})([{"caption": "a red apple"}])["input_ids"]
    assert torch.equal(ids, clip.tokenize(["a red apple"]))
    prior = DALLEPrior(num_tokens=8, grid_sizes=[2], clip_width=24, dim=16, depth=1, heads=2)
    reading = caption_collator(CaptionCollator(32), prior, {"clip": clip})
    assert torch.equal(reading([{"caption": "a red apple"}])["input_ids"], ids)
    own = DALLEPrior(num_tokens=8, grid_sizes=[2], text_encoder="embed", dim=16, depth=1, heads=2)
    plain = caption_collator(CaptionCollator(32), own, {"clip": clip})
    assert not torch.equal(plain([{"caption": "a red apple"}])["input_ids"], ids)  # BPE


def save_encoder(folder: Path, kind: str) -> Path:
    """A tiny CLIPTextModel or T5 encoder, with a word-level tokenizer (tokenizer.json, the
    format every fast tokenizer loads from), saved as transformers saves them."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        PreTrainedTokenizerFast,
        T5Config,
        T5EncoderModel,
    )

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *WORDS])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]", model_max_length=32
    ).save_pretrained(folder)
    torch.manual_seed(5)
    size = dict(vocab_size=len(vocab), pad_token_id=0)
    if kind == "clip_text":
        shape = dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2)
        config = CLIPTextConfig(
            **size,
            **shape,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
        )
        CLIPTextModel(config).save_pretrained(folder)
    else:
        config = T5Config(**size, d_model=24, d_kv=12, d_ff=48, num_layers=2, num_heads=2)
        T5EncoderModel(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["clip_text", "t5"])
def test_clip_text_model_and_t5_encoders_are_text_towers_too(kind, tmp_path):
    from transformers import AutoModel, T5EncoderModel

    folder = save_encoder(tmp_path / kind, kind)
    clip = tiny_clip(folder, lock=True).eval()
    reference = (T5EncoderModel if kind == "t5" else AutoModel).from_pretrained(folder).eval()
    ids = clip.tokenize(["a red apple", "a grinning face , twemoji style"])
    features = clip.text_features(ids)
    with torch.no_grad():
        states = reference(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    real = features.mask
    assert real.sum(1).tolist() == [3, 6]
    torch.testing.assert_close(features.states[real], states[real])
    assert clip.text_width == 24
    clip.train()  # locked: a step trains the image tower only
    tower = {k: v.clone() for k, v in clip.text_tower.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=1e-2)
    clip.training_losses(batch(clip))["loss"].backward()
    optimizer.step()
    assert all(torch.equal(v, clip.text_tower.state_dict()[k]) for k, v in tower.items())
    clip.eval().save_pretrained(tmp_path / "saved")
    shutil.rmtree(folder)
    loaded = CLIPModel.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(loaded.text_features(ids).states, clip.text_features(ids).states)

"""The DALL-E prior trained through the command line on cached codes and frozen CLIP states."""

from __future__ import annotations

import datasets
import pytest
import tiny

from t2i import train
from t2i.config import ConfigError, load_config
from t2i.data.tokens import INFO_FILE as INFO
from t2i.models import DALLEPrior, DiffusionDecoder, DiffusionPrior
from t2i.training import read_metrics

COMMON = [*tiny.DATA, "data.num_train=128", "train.batch_size=16", "train.num_samples=4"]
TINY_CLIP, TINY_VQ = tiny.CLIP_ARGS, tiny.VQ_ARGS
TINY_PRIOR = [
    "model.num_tokens=32",
    "model.clip_width=32",
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, config, small in (("vq", "vqvae", TINY_VQ), ("clip", "clip", TINY_CLIP)):
        args = [
            f"configs/shapes/{config}.yaml",
            *COMMON,
            *small,
            "train.max_steps=4",
            f"train.output_dir={root / name}",
            "train.sample_every=100",
        ]
        assert train.main(args) == 0
    return root


def check_run(out, falls: bool = True, judged: bool = True) -> None:
    """A run's loss fell (first logged window to last) and its one sample grid was judged."""
    rows = read_metrics(out / "logs" / "metrics.csv")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert not falls or losses[-1] < losses[0]
    scored = [r for r in rows if "samples/fidelity" in r]
    assert not judged or (len(scored) == 1 and 0.0 <= scored[0]["samples/fidelity"] <= 1.0)


def prior_args(parts, out, *extra):
    return [
        "configs/shapes/prior.yaml",
        *COMMON,
        *TINY_PRIOR,
        f"data.tokenizer={parts / 'vq'}",
        f"data.clip={parts / 'clip'}",
        f"data.token_cache={parts / 'cache'}",
        f"train.output_dir={out}",
        *extra,
    ]


def test_prior_trains_on_clip_states_and_its_sample_grids_are_judged(parts, tmp_path):
    out = tmp_path / "prior"
    assert train.main(prior_args(parts, out, "train.max_steps=10", "train.sample_every=10")) == 0
    check_run(out)
    assert (out / "samples" / "samples_0000010.png").is_file()
    prior = DALLEPrior.from_pretrained(out / "model")
    assert prior.config.text_encoder == "clip" and prior.image_len == 64


def run(args: list[str]):
    return train.run(load_config(args[0], args[1:]), args[0])


def test_a_prior_that_does_not_fit_its_clip_or_tokenizer_is_refused(parts, tmp_path):
    out = str(tmp_path / "p")
    with pytest.raises(ConfigError, match="model.clip_width=64 but the CLIP model .* has 32"):
        run(prior_args(parts, out, "model.clip_width=64"))
    with pytest.raises(ConfigError, match="model.num_tokens=512 but the tokenizer VQVAE has"):
        run(prior_args(parts, out, "model.num_tokens=512"))
    with pytest.raises(ConfigError, match="needs data.clip"):
        run(prior_args(parts, out, "data.clip=null"))


# ---- unCLIP: the diffusion prior over CLIP embeddings and the decoder from them ----------------

TINY_UNCLIP = ["model.embed_dim=16", "model.dim=32", "model.depth=1", "model.heads=2"]


def test_diffusion_prior_trains_on_cached_clip_embedding_pairs(parts, tmp_path):
    out = tmp_path / "dp"
    args = [
        "configs/shapes/diffusion_prior.yaml",
        *COMMON,
        *TINY_UNCLIP,
        "model.clip_width=32",
        f"data.clip={parts / 'clip'}",
        f"data.token_cache={parts / 'cache'}",
        f"train.output_dir={out}",
        "train.max_steps=30",
        "train.learning_rate=3e-3",
    ]
    assert train.main(args) == 0
    check_run(out, judged=False)
    assert isinstance(DiffusionPrior.from_pretrained(out / "model"), DiffusionPrior)
    # the image embeddings were cached once, as a datasets data set beside the captions (the
    # text side comes from one text-tower pass per batch)
    entries = [p for p in (parts / "cache").iterdir() if "embeddings" in (p / INFO).read_text()]
    assert len(entries) == 2  # training and validation sets
    data = datasets.load_from_disk(str(entries[0]))
    assert {"image_embeds", "caption"} <= set(data.column_names)
    assert "text_embeds" not in data.column_names
    assert len(data[0]["image_embeds"]) == 16


def test_decoder_trains_on_codes_and_image_embeddings_and_is_judged(parts, tmp_path):
    out = tmp_path / "decoder"
    args = [
        "configs/shapes/decoder.yaml",
        *COMMON,
        *TINY_UNCLIP,
        "model.num_tokens=32",
        f"data.tokenizer={parts / 'vq'}",
        f"data.clip={parts / 'clip'}",
        f"data.token_cache={parts / 'cache'}",
        f"train.output_dir={out}",
        "train.max_steps=10",
        "train.sample_every=10",
    ]
    assert train.main(args) == 0
    check_run(out, falls=False)
    decoder = DALLEPrior.from_pretrained(out / "model")
    assert decoder.config.text_encoder == "clip_image" and decoder.config.context_length == 4
    with pytest.raises(ConfigError, match="model.embed_dim=128 but the CLIP model .* has 16"):
        run([*args[:3], *args[4:], "model.embed_dim=128", f"train.output_dir={tmp_path / 'x'}"])


def test_pixel_decoder_trains_on_images_and_their_clip_embeddings_and_is_judged(parts, tmp_path):
    out = tmp_path / "pixels"
    args = [
        "configs/shapes/diffusion_decoder.yaml",
        *COMMON,
        "model.embed_dim=16",
        "model.block_out_channels=[8,16]",
        "model.attention_levels=[false,true]",
        "model.norm_num_groups=4",
        "model.num_train_timesteps=50",
        f"data.clip={parts / 'clip'}",
        f"train.output_dir={out}",
        "train.max_steps=6",
        "train.sample_every=6",
        "train.learning_rate=3e-3",
    ]
    assert train.main(args) == 0
    check_run(out)
    assert (out / "samples" / "samples_0000006.png").is_file()
    assert isinstance(DiffusionDecoder.from_pretrained(out / "model"), DiffusionDecoder)
    with pytest.raises(ConfigError, match="model.embed_dim=32 but the CLIP model .* has 16"):
        run([*args, "model.embed_dim=32", f"train.output_dir={tmp_path / 'x'}"])

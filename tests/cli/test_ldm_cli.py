"""The latent diffusion stages through `python -m t2i.train`: the KL autoencoder, then the
denoiser on latents it caches, reading a CLIP run; and `python -m t2i.evaluate` on the run."""

from __future__ import annotations

import json
import logging

import ldm_tiny
import pytest
import tiny
import torch

from t2i import evaluate, train
from t2i.data.shapes import ShapesDataset
from t2i.models import CLIPModel, load_model
from t2i.training import read_metrics
from t2i.training.inputs import latent_dataset

COMMON = ["data.image_size=16", *tiny.DATA, "train.batch_size=8", "train.sample_every=1000"]
AE = [
    f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in ldm_tiny.AUTOENCODER.items()
]
UNET = [
    f"model.{k}={list(v) if isinstance(v, tuple) else v}"
    for k, v in ldm_tiny.DENOISER.items()
    if k != "context_length"
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ldm")
    torch.manual_seed(0)
    CLIPModel(**{**tiny.CLIP, "image_size": 16}).save_pretrained(root / "clip" / "model")
    argv = [
        "configs/shapes/autoencoder_kl.yaml",
        *AE,
        *COMMON,
        "train.max_steps=20",
        f"train.output_dir={root / 'ae'}",
    ]
    assert train.main(argv) == 0
    return root


def ldm_args(root, *extra):
    return [
        "configs/shapes/ldm.yaml",
        *UNET,
        *COMMON,
        f"data.autoencoder={root / 'ae'}",
        f"data.clip={root / 'clip'}",
        f"data.token_cache={root / 'cache'}",
        *extra,
    ]


def test_the_autoencoder_saves_its_scaling_factor(runs):
    vae = load_model(runs / "ae")
    assert vae.config.scaling_factor is not None and vae.config.scaling_factor > 0
    rows = read_metrics(runs / "ae" / "logs" / "metrics.csv")
    assert any("psnr" in r for r in rows)


def test_the_denoiser_trains_on_cached_latents_and_resumes_on_a_cache_hit(runs, caplog):
    out = runs / "ldm"
    argv = ldm_args(runs, f"train.output_dir={out}", "train.learning_rate=2e-3")
    assert train.main([*argv, "train.max_steps=30"]) == 0
    losses = [r["loss"] for r in read_metrics(out / "logs" / "metrics.csv") if "loss" in r]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    caplog.set_level(logging.INFO, logger="t2i")
    assert train.main([*argv, "train.max_steps=32", "--resume", "latest"]) == 0
    assert "token cache hit" in caplog.text and "token cache miss" not in caplog.text
    tmp = runs / "ldm.json"
    assert evaluate.main([str(out), "--n", "4", "--batch-size", "4", "--out", str(tmp)]) == 0
    report = json.loads(tmp.read_text())
    assert report["fidelity_one_object"]["n"] == 4 and report["loss_terms"]["loss"] > 0


def test_the_cached_latents_are_the_autoencoders_encoding(runs, tmp_path):
    vae = load_model(runs / "ae").eval()
    data = ShapesDataset(n=6, seed=3, size=16)
    cached = latent_dataset(vae, data, str(tmp_path), {"autoencoder": "ae"})
    with torch.no_grad():
        direct = vae.encode(torch.stack([data[i]["pixel_values"] for i in range(6)]))
    for i in range(6):
        assert torch.allclose(cached[i]["latents"], direct[i], atol=1e-5)
    retrained = load_model(runs / "ae").eval()
    with torch.no_grad():
        retrained.vae.decoder.conv_out.bias.add_(1.0)  # another autoencoder: another entry
    latent_dataset(retrained, data, str(tmp_path), {"autoencoder": "ae"})
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1  # replaced


def test_a_denoiser_that_does_not_fit_its_autoencoder_is_refused(runs, tmp_path, capsys):
    argv = ldm_args(runs, "model.latent_channels=3", f"train.output_dir={tmp_path}")
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "model.latent_channels=3 but the autoencoder at data.autoencoder has 4" in err


def test_the_run_trains_on_captions_dropped_at_the_configs_rate(runs, monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def trainer(model, config, train_dataset, **kwargs):  # what train.run hands the loop
        seen["train"], seen["val"] = train_dataset, kwargs["sample_dataset"]
        raise Stop

    monkeypatch.setattr(train, "Trainer", trainer)
    path, *overrides = ldm_args(
        runs, f"train.output_dir={tmp_path / 'ldm'}", "data.caption_drop_prob=0.4"
    )
    config = train.load_config(path, overrides)
    with pytest.raises(Stop):
        train.run(config)
    torch.manual_seed(0)
    reads = [seen["train"][i % 64]["caption"] for i in range(500)]
    assert 0.3 < reads.count("") / 500 < 0.5  # 0.4 expected; 0 when the key was not wired
    assert all(seen["val"][i]["caption"] for i in range(4))  # validation keeps its captions

"""A tokenizer and a PixelCNN prior over its codes, trained and scored through the command lines."""

from __future__ import annotations

import json
import logging

import pytest
import tiny
import torch

from t2i import evaluate, train
from t2i.models import VQVAE, PixelCNN
from t2i.training import read_metrics

COMMON = [*tiny.DATA, "train.batch_size=16", "train.num_samples=4"]
TINY_VQ = tiny.VQ_ARGS
TINY_PRIOR = [
    "model.num_tokens=32",
    "model.channels=16",
    "model.num_layers=3",
    "model.text_width=16",
    "model.text_layers=1",
]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vqvae"
    args = ["configs/shapes/vqvae.yaml", *COMMON, *TINY_VQ, "train.max_steps=30"]
    assert train.main([*args, f"train.output_dir={out}", "train.sample_every=30"]) == 0
    return out


def test_tokenizer_trains_writes_reconstructions_and_is_evaluated(tokenizer_run, tmp_path):
    rows = read_metrics(tokenizer_run / "logs" / "metrics.csv")
    assert rows[-1]["recon"] < rows[0]["recon"]
    assert {"psnr", "perplexity", "usage", "codebook", "commitment"} <= rows[0].keys()
    assert (tokenizer_run / "samples" / "reconstructions_0000030.png").is_file()
    model = VQVAE.from_pretrained(tokenizer_run / "model")
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 8)
    out = tmp_path / "eval.json"
    assert (
        evaluate.main([str(tokenizer_run), "--n", "20", "--batch-size", "10", "--out", str(out)])
        == 0
    )
    report = json.loads(out.read_text())["reconstruction"]
    assert report["n"] == 20 and report["fidelity_originals"] == 1.0
    assert 0.0 <= report["fidelity_reconstructions"] <= 1.0 and report["psnr"] > 5
    assert 0 < report["codebook"]["codes"]["usage"] <= 1


def test_prior_trains_on_cached_codes_and_its_samples_decode(tokenizer_run, tmp_path, caplog):
    out, cache = tmp_path / "prior", tmp_path / "cache"
    args = [
        "configs/shapes/pixelcnn.yaml",
        *COMMON,
        *TINY_PRIOR,
        f"data.tokenizer={tokenizer_run}",
        f"data.token_cache={cache}",
        f"train.output_dir={out}",
        "train.sample_every=20",
    ]
    assert train.main([*args, "train.max_steps=20"]) == 0
    assert len(list(cache.iterdir())) == 2  # the training and the validation codes
    assert (out / "samples" / "samples_0000020.png").is_file()  # decoded by the tokenizer
    assert (out / "samples" / "data_0000020.png").is_file()
    rows = read_metrics(out / "logs" / "metrics.csv")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert any("samples/fidelity" in r for r in rows)  # caption-conditioned: samples judged
    caplog.clear()
    caplog.set_level(logging.INFO, logger="t2i")
    assert train.main([*args, "train.max_steps=25", "train.resume=latest"]) == 0
    assert "token cache hit" in caplog.text and "token cache miss" not in caplog.text
    prior = PixelCNN.from_pretrained(out / "model")
    assert prior.config.grid_size == 8

    tokenizer = VQVAE.from_pretrained(tokenizer_run / "model")
    result = evaluate.evaluate_model(prior, {"tokenizer": tokenizer}, n=8, batch_size=8)
    assert result["loss_terms"]["loss"] > 0
    assert result["fidelity_one_object"]["n"] == 8
    report = tmp_path / "prior.json"
    assert evaluate.main([str(out), "--n", "8", "--batch-size", "8", "--out", str(report)]) == 0
    assert json.loads(report.read_text())["loss_terms"] == result["loss_terms"]


def test_a_prior_that_does_not_fit_its_tokenizer_is_refused(tokenizer_run, tmp_path, capsys):
    args = [
        "configs/shapes/pixelcnn.yaml",
        *COMMON,
        *TINY_PRIOR,
        "model.num_tokens=64",
        f"data.tokenizer={tokenizer_run}",
        f"train.output_dir={tmp_path}",
    ]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert "model.num_tokens=64" in err and "num_tokens=32" in err


def test_a_tokenizer_path_that_is_no_tokenizer_is_refused(tmp_path, capsys):
    PixelCNN(num_tokens=8, grid_size=4, channels=8, num_layers=1).save_pretrained(tmp_path / "p")
    args = ["configs/shapes/pixelcnn.yaml", f"data.tokenizer={tmp_path / 'p'}"]
    assert train.main(args) == 2
    assert "holds a PixelCNN, not an ImageTokenizer" in capsys.readouterr().err

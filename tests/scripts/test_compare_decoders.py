"""scripts/compare_decoders.py loads a model from a run's checkpoint folder as the run saved it."""

from __future__ import annotations

import torch
from conftest import load_script

from t2i import train
from t2i.config import checker, load_config
from t2i.models import build_model, load_model

compare_decoders = load_script("compare_decoders")


def test_a_checkpoint_folder_loads_the_weights_the_run_ends_with(tmp_path):
    run = tmp_path / "run"
    argv = [
        "configs/shapes/vae.yaml",
        "model.channels=[8, 16]",
        "model.latent_dim=4",
        "data.num_train=32",
        "data.num_val=4",
        "train.batch_size=8",
        "train.max_steps=3",
        "train.checkpoint_every=3",
        "train.sample_every=100",
        f"train.output_dir={run}",
    ]
    assert train.main(argv) == 0
    saved = load_model(run).state_dict()
    fresh = build_model(load_config(run / "config.yaml").model, checker("c")).state_dict()
    loaded = compare_decoders.load_decoder(run / "checkpoints" / "checkpoint-0000003")
    assert type(loaded).__name__ == "VAE" and loaded.state_dict().keys() == saved.keys()
    assert any(not torch.equal(saved[k], fresh[k]) for k in saved)  # training moved them
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert compare_decoders.load_decoder(run).state_dict().keys() == saved.keys()  # a run dir

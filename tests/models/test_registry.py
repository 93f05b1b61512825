"""The model registry: `build_model` from a config's model section, named presets, and
`load_model` refusing a saved model of another kind before reading its weights."""

from __future__ import annotations

import pytest

from t2i.config import checker
from t2i.models import (
    MODELS,
    PRESETS,
    VAE,
    DALLEPrior,
    ImageTokenizer,
    build_model,
    load_model,
    model_type,
)


def test_a_preset_sets_the_sizes_and_the_section_wins_over_it():
    prior = build_model({"type": "dalle_prior", "preset": "prior-tiny", "num_tokens": 32})
    assert (prior.config.dim, prior.config.depth, prior.config.heads) == (64, 2, 4)
    wider = build_model({"type": "dalle_prior", "preset": "prior-tiny", "dim": 32})
    assert wider.config.dim == 32 and wider.config.depth == 2
    assert model_type(prior) == "dalle_prior" and MODELS["dalle_prior"] is DALLEPrior


def test_every_preset_builds_the_type_it_names():
    for name, (kind, sizes) in PRESETS.items():
        model = build_model({"type": kind, "preset": name, "num_tokens": 16, "grid_sizes": [2]})
        assert all(model.config[k] == v for k, v in sizes.items()), name


def test_an_unknown_type_a_preset_of_another_type_and_a_mistyped_key_are_named():
    with pytest.raises(ValueError, match="model.type='unet' is not a t2i model"):
        build_model({"type": "unet"})
    with pytest.raises(ValueError, match="'prior-tiny' is not a preset of vae"):
        build_model({"type": "vae", "preset": "prior-tiny"})
    with pytest.raises(ValueError, match="latent_dims"):
        build_model({"type": "vae", "latent_dims": 4}, checker("cfg: model (vae)"))
    model = build_model({"type": "vae", "beta": "4e0", "channels": [8, 16]}, checker("cfg"))
    assert model.config.beta == 4.0  # coerced from YAML's string


def test_load_model_names_the_kind_it_found(tmp_path):
    VAE(channels=(8, 16), latent_dim=4).save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="holds a VAE, not an ImageTokenizer"):
        load_model(tmp_path / "vae", kind=ImageTokenizer)
    assert type(load_model(tmp_path / "vae", kind=VAE)) is VAE

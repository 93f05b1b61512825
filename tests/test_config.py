"""Typed configs: YAML in, overrides applied, and errors that name the key and the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i.config import (
    ConfigError,
    ExperimentConfig,
    check_kwargs,
    checker,
    load_config,
    save_config,
)


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_become_typed_fields(tmp_path):
    path = write(tmp_path, "model: {type: vae, latent_dim: 8}\ntrain: {max_steps: 5}\n")
    config = load_config(
        path,
        [
            "train.learning_rate=3e-4",
            "data.image_size=64",
            "train.ema_decay=null",
            "model.beta=4",
            "train.warmup_steps=1",
        ],
    )
    assert isinstance(config, ExperimentConfig)
    assert config.train.max_steps == 5 and config.train.learning_rate == 3e-4
    assert config.data.image_size == 64 and config.train.ema_decay is None
    assert config.model == {"type": "vae", "latent_dim": 8, "beta": 4}


def test_an_int_is_accepted_where_a_float_is_expected(tmp_path):
    config = load_config(write(tmp_path, "model: {type: vae}\ntrain: {learning_rate: 1}\n"))
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)


def test_a_mistyped_key_is_named_with_a_suggestion_and_the_valid_keys(tmp_path):
    path = write(tmp_path, "model: {type: vae}\ntrain: {lerning_rate: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "train.lerning_rate" in message and "learning_rate" in message
    assert str(path) in message and "max_steps" in message  # the valid keys are listed


def test_an_unknown_override_and_a_wrong_type_are_errors(tmp_path):
    path = write(tmp_path, "model: {type: vae}\n")
    with pytest.raises(ConfigError, match="data.imag_size"):
        load_config(path, ["data.imag_size=64"])
    with pytest.raises(ConfigError, match="'train.max_steps' must be int, got 'many'"):
        load_config(path, ["train.max_steps=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["train.max_steps"])


@pytest.mark.parametrize(
    "override",
    [
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.log_every=0",
        "train.max_steps=-1",
        "train.batch_size=0",
        "data.num_val=0",
        "train.warmup_steps=-5",
    ],
)
def test_a_count_below_its_least_value_is_named(tmp_path, override):
    """A zero step count used to reach the training loop and divide by zero there."""
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=rf"{key}={value} must be >= \d"):
        load_config(write(tmp_path, "model: {type: vae}\n"), [override])


@pytest.mark.parametrize("rate", ["0", "-1e-3", ".inf", ".nan"])
def test_a_learning_rate_that_is_not_finite_and_positive_is_named(tmp_path, rate):
    with pytest.raises(ConfigError, match="train.learning_rate=.* must be a finite number > 0"):
        load_config(write(tmp_path, "model: {type: vae}\n"), [f"train.learning_rate={rate}"])


def test_model_type_is_required_and_files_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="model.type"):
        load_config(write(tmp_path, "train: {max_steps: 5}\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_loads_back_equal(tmp_path):
    config = load_config(write(tmp_path, "model: {type: cvae, alpha: 0.3}\n"), ["train.seed=7"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_check_kwargs_names_the_bad_argument():
    def build(latent_dim: int = 4, beta: float = 1.0) -> None: ...

    check_kwargs(build, {"beta": 2.0}, "x.yaml: model")
    with pytest.raises(ConfigError, match="'latnt_dim'.*Did you mean 'latent_dim'"):
        check_kwargs(build, {"latnt_dim": 2}, "x.yaml: model")


def test_check_kwargs_types_model_arguments_as_the_constructor_annotates_them():
    def build(rate: float = 1.0, sizes: tuple[int, int] = (1, 2), hard: bool = False) -> None: ...

    checked = check_kwargs(build, {"rate": "3e-4", "sizes": [4, 8]}, "x.yaml: model")
    assert checked == {"rate": 3e-4, "sizes": (4, 8)}  # YAML's "3e-4" is a string
    with pytest.raises(ConfigError, match="'hard' must be bool"):
        check_kwargs(build, {"hard": "yes please"}, "x.yaml: model")


def test_every_shipped_model_section_is_typed():
    from t2i.train import build_model

    config = load_config(Path(__file__).resolve().parents[1] / "configs/shapes/gumbel.yaml")
    model = build_model(config.model, checker("gumbel.yaml"))
    assert isinstance(model.config.anneal_rate, float)  # written 3e-4 in the YAML


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    config = load_config(write(tmp_path, "model: {type: vae}\ntrain: {learning_rate: 2e-4}\n"))
    assert config.train.learning_rate == 2e-4
    with pytest.raises(ConfigError, match="must be float"):
        load_config(write(tmp_path, "model: {type: vae}\ntrain: {learning_rate: fast}\n"))

"""VQGAN's adversarial term as an option of the KL autoencoder and the VQ-VAE: off before
disc_start (and nothing evaluated), eq. 7's adaptive weight on the decoder's last layer, no
gradient crossing between the players, one AdamW step training both, and the discriminator
kept by training checkpoints but left out of the shipped model."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path

import ldm_tiny
import pytest
import tiny
import torch
import torch.nn.functional as F
import yaml
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from torch.utils.data import Dataset

from t2i.config import TrainConfig
from t2i.models import VQVAE, KLAutoencoder, build_model, load_model
from t2i.models.adversarial import AdversarialMixin, adaptive_weight
from t2i.nn import hinge_loss
from t2i.pipelines import DEFAULT_PIPELINE
from t2i.training import Trainer, read_metrics

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "kl": (KLAutoencoder, dict(ldm_tiny.AUTOENCODER)),
    "vq": (VQVAE, dict(image_size=16, **tiny.VQ)),
}
SHIPPED = {"kl": "vae", "vq": "image_tokenizer"}  # the default pipeline's components
STAGES = {"kl": "autoencoder_kl", "vq": "vqvae"}  # the recipe's stage configs
GAN = dict(disc_weight=0.5, disc_layers=2, disc_channels=8)  # 16 px -> 2 x 2 logits
TERMS = {"g_loss", "d_loss", "d_weight", "logits_real", "logits_fake"}
WEIGHTS = "diffusion_pytorch_model.safetensors"


def build(name: str, seed: int = 0, **options) -> AdversarialMixin:
    """A tiny model of `name` in training mode, seeded."""
    cls, arguments = MODELS[name]
    torch.manual_seed(seed)
    return cls(**arguments, **options).train()


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def losses(model: AdversarialMixin, x: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """`training_losses` under a fixed seed (the KL autoencoder samples its posterior)."""
    torch.manual_seed(seed)
    return model.training_losses({"pixel_values": x})


def reconstruction(model: AdversarialMixin, x: torch.Tensor) -> torch.Tensor:
    """The model's reconstruction of x with its graph (the KL one through the posterior mean)."""
    return model(x)[0] if isinstance(model, VQVAE) else model.vae(x).sample


def saved_keys(folder: Path) -> set[str]:
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        return set(f.keys())


@pytest.fixture
def diffusers_warnings(caplog):
    """diffusers' warnings (its loggers do not propagate to the root one by default)."""
    diffusers_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="diffusers"):
            yield caplog
    finally:
        diffusers_logging.disable_propagation()


@pytest.mark.parametrize("name", MODELS)
def test_before_disc_start_the_loss_is_the_plain_loss_and_the_discriminator_is_not_run(name):
    plain, gan = build(name), build(name, **GAN, disc_start=1)
    shared = gan.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in plain.state_dict().items())  # built last
    x = images()
    expected, terms = losses(plain, x), losses(gan, x)
    assert terms.keys() == expected.keys()
    assert torch.equal(terms["loss"], expected["loss"])
    terms["loss"].backward()
    assert all(p.grad is None for p in gan.discriminator.parameters())
    norms = [m for m in gan.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(int(m.num_batches_tracked) == 0 for m in norms)  # never evaluated
    assert int(gan.disc_step) == 1


@pytest.mark.parametrize("name", MODELS)
def test_from_disc_start_the_discriminator_trains_and_its_terms_are_logged(name):
    plain, gan = build(name), build(name, **GAN, disc_start=1)
    x = images()
    losses(gan, x, seed=1)  # the one batch before the start
    expected, terms = losses(plain, x, seed=2), losses(gan, x, seed=2)
    assert terms.keys() == expected.keys() | TERMS
    assert all(terms[k].dim() == 0 and torch.isfinite(terms[k]) for k in TERMS)
    assert not torch.equal(terms["loss"], expected["loss"])
    adversarial = terms["d_weight"] * terms["g_loss"] + terms["d_loss"]
    assert torch.allclose(terms["loss"], expected["loss"] + adversarial)
    terms["loss"].backward()
    for key, p in gan.discriminator.named_parameters():
        assert p.grad is not None, key
        # (the last bias's gradient is 0 while every logit lies within the hinge's margin)
        assert p.dim() == 1 or p.grad.abs().sum() > 0, key
    assert int(gan.disc_step) == 2


@pytest.mark.parametrize("name", MODELS)
def test_in_eval_mode_no_adversarial_term_is_added_nor_a_batch_counted(name):
    gan = build(name, **GAN).eval()
    with torch.no_grad():  # as the trainer's validation calls it
        terms = losses(gan, images())
    assert not terms.keys() & TERMS and int(gan.disc_step) == 0


@pytest.mark.parametrize("name", MODELS)
def test_the_adaptive_weight_is_eq7_on_the_decoders_last_layer(name):
    gan = build(name, **GAN)
    last = gan.decoder_last_layer
    (owner,) = [m for m in gan.modules() if getattr(m, "weight", None) is last]
    outputs = []
    owner.register_forward_hook(lambda module, args, out: outputs.append(out))
    x = images()
    recon = reconstruction(gan, x)
    assert torch.equal(outputs[-1], recon)  # that layer's output is the reconstruction
    rec_loss = F.mse_loss(recon, x)
    d_weight = gan.adversarial_losses(x, recon, rec_loss)["d_weight"]
    assert torch.isfinite(d_weight) and d_weight > 0
    g_loss = -gan.discriminator(recon).mean()
    (rec_grad,) = torch.autograd.grad(rec_loss, last, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last, retain_graph=True)
    by_hand = GAN["disc_weight"] * rec_grad.norm() / (g_grad.norm() + 1e-4)
    assert torch.allclose(d_weight, by_hand, rtol=1e-5)
    tripled = gan.adversarial_losses(x, recon, 3 * rec_loss)["d_weight"]
    assert torch.allclose(tripled, 3 * d_weight, rtol=1e-5)


def test_the_adaptive_weight_is_clamped_at_1e4_where_the_generator_gradient_vanishes():
    w = torch.ones(2, 2, requires_grad=True)
    assert adaptive_weight(1e3 * w.sum(), 0 * w.sum(), w) == 1e4  # 2000 / 1e-4, clamped
    assert torch.allclose(adaptive_weight(w.sum(), 2 * w.sum(), w), torch.tensor(2 / 4.0001))


@pytest.mark.parametrize("name", MODELS)
def test_the_generator_term_gives_the_discriminator_no_gradient_nor_its_loss_the_decoder(name):
    gan = build(name, **GAN)
    reference = copy.deepcopy(gan.discriminator)
    x = images()
    recon = reconstruction(gan, x)
    terms = gan.adversarial_losses(x, recon, F.mse_loss(recon, x))
    g_term = terms["d_weight"] * -reference(recon).mean()
    (decoder_grad,) = torch.autograd.grad(g_term, gan.decoder_last_layer, retain_graph=True)
    terms["loss"].backward()
    hinge_loss(reference(x), reference(recon.detach())).backward()  # D's own loss alone
    for (key, p), q in zip(
        gan.discriminator.named_parameters(), reference.parameters(), strict=True
    ):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-8), key
    assert torch.allclose(gan.decoder_last_layer.grad, decoder_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_one_adamw_step_moves_the_decoder_and_the_discriminator(name):
    gan = build(name, **GAN)
    before = {key: p.detach().clone() for key, p in gan.named_parameters()}
    optimizer = torch.optim.AdamW(gan.parameters(), lr=1e-3, weight_decay=0.0)
    losses(gan, images())["loss"].backward()  # the trainer's update
    optimizer.step()
    moved = {key for key, p in gan.named_parameters() if not torch.equal(p, before[key])}
    autoencoder = {k for k in before if not k.startswith("discriminator.")}
    assert autoencoder <= moved  # the decoder's last layer among them
    weights = {k for k, p in gan.discriminator.named_parameters() if p.dim() > 1}
    assert weights and {f"discriminator.{k}" for k in weights} <= moved


def _one_step(model: AdversarialMixin) -> None:
    """One AdamW update on a batch (the discriminator trains from the start)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses(model, images())["loss"].backward()
    optimizer.step()


@pytest.mark.parametrize("name", MODELS)
def test_the_saved_model_holds_no_discriminator_and_loads_with_a_fresh_one(
    name, tmp_path, diffusers_warnings
):
    gan = build(name, **GAN)
    _one_step(gan)
    gan.save_pretrained(tmp_path / "gan")
    build(name).save_pretrained(tmp_path / "plain")
    assert saved_keys(tmp_path / "gan") == saved_keys(tmp_path / "plain")
    config = json.loads((tmp_path / "gan" / "config.json").read_text())
    assert {k: config[k] for k in GAN} == GAN  # fine-tuning rebuilds it from these
    state = gan.state_dict()  # the trained model keeps its training state
    assert int(state["disc_step"]) == 1 and any(k.startswith("discriminator.") for k in state)
    torch.manual_seed(5)
    type(gan).from_pretrained(tmp_path / "plain")
    rng = torch.get_rng_state()
    diffusers_warnings.clear()
    torch.manual_seed(5)
    loaded = type(gan).from_pretrained(tmp_path / "gan")
    assert not diffusers_warnings.records
    assert torch.equal(torch.get_rng_state(), rng)  # the fresh discriminator drew on a fork
    x = images()
    assert torch.equal(loaded.reconstruct(x), gan.eval().reconstruct(x))
    assert int(loaded.disc_step) == 0 and not loaded.discriminator.training
    first = loaded.discriminator.net[0].weight  # N(0, 0.02), not the trained one
    assert first.device.type == "cpu" and 0.01 < float(first.detach().std()) < 0.03
    assert not torch.equal(first, gan.discriminator.net[0].weight)
    assert loaded.state_dict().keys() == state.keys()


@pytest.mark.parametrize("name", MODELS)
def test_diffusers_alone_leaves_the_missing_discriminator_unfilled_and_warns(
    name, tmp_path, diffusers_warnings
):
    """What `AdversarialMixin.from_pretrained` works around: diffusers' loader leaves
    weights missing from the file on the meta device (low_cpu_mem_usage, its default) and
    warns about them."""
    gan = build(name, **GAN)
    gan.save_pretrained(tmp_path)
    bare = super(AdversarialMixin, type(gan)).from_pretrained(str(tmp_path))
    assert all(p.is_meta for p in bare.discriminator.parameters())
    (record,) = diffusers_warnings.records
    assert "newly initialized" in record.getMessage() and "discriminator." in record.getMessage()


@pytest.mark.parametrize("name", MODELS)
def test_without_the_option_a_model_saves_the_keys_it_saved_before_it(name, tmp_path):
    shipped = DEFAULT_PIPELINE / SHIPPED[name]  # saved before the option existed
    model = load_model(shipped)
    assert model.config.disc_weight == 0 and model.discriminator is None
    model.save_pretrained(tmp_path)
    assert saved_keys(tmp_path) == saved_keys(shipped)
    fresh = build(name, disc_weight=0.0)
    assert fresh.state_dict().keys() == build(name).state_dict().keys()
    assert not any("disc" in k for k in fresh.state_dict())


class Images(Dataset):
    def __init__(self, n: int = 8) -> None:
        self.x = images(n, seed=3)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i]}


@pytest.mark.parametrize("name", MODELS)
def test_a_training_checkpoint_keeps_the_discriminator_and_its_step_count(name, tmp_path):
    config = TrainConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        batch_size=4,
        learning_rate=1e-3,
        warmup_steps=1,
        log_every=1,
        sample_every=100,
        checkpoint_every=2,
        num_samples=2,
    )
    first = Trainer(build(name, **GAN, disc_start=1), config, Images())
    result = first.train()
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.csv")
    assert "d_loss" not in rows[0] and TERMS <= rows[1].keys()  # logged from disc_start
    assert not any("disc" in k for k in saved_keys(result.model_dir))
    resumed = build(name, seed=1, **GAN, disc_start=1)
    Trainer(resumed, dataclasses.replace(config, resume="latest"), Images()).train()
    assert int(resumed.disc_step) == 2
    trained = first.model.discriminator.state_dict()
    for key, value in resumed.discriminator.state_dict().items():
        assert torch.equal(value, trained[key]), key


@pytest.mark.parametrize("name", MODELS)
def test_the_stage_config_leaves_it_off_and_its_commented_keys_turn_it_on(name):
    text = (ROOT / "configs" / "custom" / "stages" / f"{STAGES[name]}.yaml").read_text()
    section = yaml.safe_load(text)["model"]
    assert build_model(section).discriminator is None
    lines = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("# disc_")]
    options = yaml.safe_load("\n".join(lines))
    assert options.keys() == {"disc_weight", "disc_start", "disc_layers", "disc_channels"}
    assert build_model({**section, **options}).discriminator is not None


def test_a_discriminator_too_deep_for_the_images_is_a_clear_error():
    with pytest.raises(ValueError, match="disc_layers=3 needs images of at least 24 px"):
        build("vq", disc_weight=0.5, disc_layers=3)


@pytest.mark.parametrize("name", ["kl", "vq"])
def test_ddp_looks_for_unused_parameters_only_while_the_discriminator_waits(name, tmp_path):
    config = TrainConfig(output_dir=str(tmp_path), max_steps=1, batch_size=2)
    data = [{"pixel_values": x} for x in images(2)]
    waiting = build(name, **GAN, disc_start=5)
    assert waiting.may_leave_parameters_unused
    assert Trainer(waiting, config, data).accelerator.ddp_handler.find_unused_parameters
    assert not build(name, **GAN, disc_start=0).may_leave_parameters_unused
    plain = build(name)
    handler = Trainer(plain, config, data).accelerator.ddp_handler
    assert handler is None or not handler.find_unused_parameters


def test_vq_latents_of_an_adversarial_vqvae_carry_no_discriminator():
    from t2i.models import VQLatents

    vq = build("vq", **GAN, disc_start=0)
    latents = VQLatents.from_vqvae(vq, [images(4)])
    assert not any(k.startswith("vq.discriminator") for k in latents.state_dict())
    x = images(2, seed=3)
    torch.testing.assert_close(latents.vq.encoder(x), vq.encoder(x))

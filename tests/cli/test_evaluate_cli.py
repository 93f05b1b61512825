"""`python -m t2i.evaluate MODEL --suite shapes` on small saved models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from t2i import cli, evaluate
from t2i.evaluation.pipelines import ROUTE_SETTINGS, another_image, pipeline_prompt_sets
from t2i.models import CVAE, VAE, load_model


def test_vae_gets_its_elbo_and_active_dimensions(tmp_path):
    torch.manual_seed(0)
    VAE(channels=(8, 16), latent_dim=6).save_pretrained(tmp_path / "vae")
    out = tmp_path / "metrics.json"
    code = evaluate.main(
        [str(tmp_path / "vae"), "--n", "40", "--batch-size", "20", "--out", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    terms, latents = result["loss_terms"], result["latents"]
    assert {"elbo_nats", "bpd", "kl", "recon"} <= terms.keys()
    assert terms["elbo_nats"] == pytest.approx(-(terms["recon"] + terms["kl"]), rel=1e-4)
    assert latents["latent_dims"] == 6 and len(latents["kl_per_dim"]) == 6
    active = sum(k > evaluate.ACTIVE_KL for k in latents["kl_per_dim"])
    assert latents["active_dims"] == active
    assert "fidelity_one_object" not in result  # a VAE does not read captions


def test_text_conditioned_models_get_prompt_fidelity_and_repeat_exactly(tmp_path):
    torch.manual_seed(0)
    CVAE(channels=(8, 16), latent_dim=4, text_width=16, text_layers=1).save_pretrained(
        tmp_path / "run" / "model"
    )
    model = load_model(tmp_path / "run")  # a run directory works too
    first = evaluate.evaluate_shapes(model, n=20, batch_size=10)
    again = evaluate.evaluate_shapes(model, n=20, batch_size=10)
    assert first == again
    for key in ("fidelity_one_object", "fidelity_two_objects"):
        assert 0.0 <= first[key]["fidelity"] <= 1.0 and first[key]["n"] == 20


def test_a_missing_model_is_a_clear_error(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "nothing")]) == 2
    assert (
        "MODEL " in (err := capsys.readouterr().err)
        and "no such folder, nor a shipped pipeline" in err
    )


def test_a_pipeline_is_scored_per_setting_and_prompt_set(saved_pipeline, tmp_path, capsys):
    pipe_dir = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, pipe_dir)
    holdout = [{"color": "purple", "shape": "triangle"}]
    (pipe_dir / "prior" / "config.yaml").write_text(yaml.safe_dump({"data": {"holdout": holdout}}))
    out = tmp_path / "eval.json"
    argv = [str(pipe_dir), "--n", "3", "--images-per-prompt", "2", "--out", str(out)]
    assert evaluate.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["prompts"] == 3 and report["images_per_prompt"] == 2
    # each setting reports what its route sampled at, resolved: named values, else recorded
    assert report["guidance_rerank"]["settings"] == {
        "guidance_scale": 3.0,
        "temperature": 1.0,
        "top_k": None,
        "top_p": None,
        "rerank": 8,
    }
    recorded = json.loads((pipe_dir / "model_index.json").read_text())["_t2i_sampling"]
    defaults = report["defaults_rerank"]["settings"]
    assert defaults["rerank"] == 8 and defaults["temperature"] == recorded["temperature"]
    assert report["plain"]["settings"]["guidance_scale"] == 1.0 != recorded["guidance_scale"]
    for setting in ("plain", "guidance", "rerank", "guidance_rerank", "defaults"):
        for prompts in ("one_object", "two_objects", "holdout"):
            scores = report[setting][prompts]
            assert scores["n"] == 6 and 0.0 <= scores["fidelity"] <= 1.0
    # --settings scores only the named ones; an unCLIP setting needs the route
    argv += ["--settings", "defaults"]
    assert evaluate.main(argv) == 0
    assert {"defaults"} == set(json.loads(out.read_text())) & set(ROUTE_SETTINGS["dalle"])
    assert evaluate.main([*argv, "unclip_plain"]) == 2
    assert "has no unCLIP route" in capsys.readouterr().err
    # the held-out prompts name a held-out combination
    captions, _ = pipeline_prompt_sets(16, 3, holdout)["holdout"]
    assert all("purple" in c and "triangle" in c for c in captions)


def test_a_shipped_pipeline_is_scored_by_its_name(saved_pipeline, tmp_path, monkeypatch):
    # as `generate --model emoji` reads it: a name that is no path here is t2i/assets/NAME
    assets = tmp_path / "assets"
    shutil.copytree(saved_pipeline, assets / "mine")
    monkeypatch.setattr(cli, "ASSETS", assets)
    monkeypatch.chdir(tmp_path)  # no folder named "mine" where it runs
    out = tmp_path / "eval.json"
    argv = ["mine", "--n", "2", "--images-per-prompt", "1", "--settings", "defaults"]
    assert evaluate.main([*argv, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["prompts"] == 2
    assert evaluate.main(["yours", "--n", "2"]) == 2  # neither a folder nor shipped


def test_a_pipeline_with_the_unclip_route_is_scored_on_it_too(tmp_path):
    from conftest import tiny_pipeline

    pipe_dir = tmp_path / "pipe"
    tiny_pipeline(unclip=True).save_pretrained(pipe_dir)
    out = tmp_path / "eval.json"
    argv = [str(pipe_dir), "--n", "2", "--images-per-prompt", "2", "--out", str(out)]
    assert evaluate.main(argv) == 0
    report = json.loads(out.read_text())
    for setting in ("guidance", "unclip_plain", "unclip_guidance", "unclip_defaults"):
        assert report[setting]["one_object"]["n"] == 4 and report[setting]["images_per_s"] > 0
    assert report["unclip_guidance"]["route"] == "unclip"
    assert report["unclip_guidance"]["settings"]["prior_guidance_scale"] == 4.0
    for scores in report["unclip"]["embeddings"].values():
        for key in (
            "cosine_prior_to_image",
            "cosine_text_to_image",
            "cosine_another_image_to_image",
        ):
            assert -1.0 <= scores[key] <= 1.0
        assert 0.0 <= scores["prior_closer"] <= 1.0
    variations = report["unclip"]["variations"]
    assert variations["n"] == 4 and variations["per_image"] == 2
    assert 0.0 <= variations["fidelity"] <= 1.0


def test_another_image_of_a_caption_shows_what_it_states_and_draws_the_rest_anew():
    from t2i.data.shapes import ShapesDataset
    from t2i.evaluation import judge_many

    data = ShapesDataset(n=8, seed=evaluate.TEST_SEED, size=32, num_objects=2)
    samples = [data[i] for i in range(8)]
    specs = [s["spec"] for s in samples]
    others = another_image(specs, 32, start=0)
    assert others.shape == (8, 3, 32, 32)
    assert judge_many(list(others), specs)["fidelity"] == 1.0  # every stated attribute holds
    originals = torch.stack([s["pixel_values"] for s in samples])
    assert not any(torch.equal(a, b) for a, b in zip(others, originals, strict=True))
    assert torch.equal(others, another_image(specs, 32, start=0))  # seeded
    assert not torch.equal(others, another_image(specs, 32, start=8))

"""Fine-tuning a saved pipeline on a custom captioned folder, and starting any stage from
saved weights (`init_from`)."""

from __future__ import annotations

import json
from pathlib import Path

import ldm_tiny
import numpy as np
import pytest
import torch
from conftest import save_tiny_open_clip, save_tiny_vqmodel, tiny_pipeline
from PIL import Image
from safetensors.torch import load_file

from t2i import TextToImagePipeline, train
from t2i.config import ConfigError, load_config
from t2i.data.shapes import export
from t2i.pipelines import load_pipeline

TINY = [
    "data.num_val=4",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "train.log_every=2",
    "train.sample_every=100",
    "train.checkpoint_every=100",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return export(tmp_path_factory.mktemp("data") / "mine", n=48, seed=3, size=16)


def weights(path):
    return load_file(path / "diffusion_pytorch_model.safetensors")


def test_finetune_the_prior_writes_a_pipeline_that_generate_loads(saved_pipeline, folder, tmp_path):
    out = tmp_path / "tuned"
    argv = [
        "configs/custom/finetune.yaml",
        f"data.path={folder}",
        f"init_from={saved_pipeline}",
        f"output_dir={out}",
        "max_steps=4",
        *TINY,
    ]
    assert train.main(argv) == 0
    before, after = weights(saved_pipeline / "prior"), weights(out / "prior")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the prior trained
    tokenizer_before = weights(saved_pipeline / "image_tokenizer")
    tokenizer_after = weights(out / "image_tokenizer")
    assert all(torch.equal(tokenizer_before[k], tokenizer_after[k]) for k in tokenizer_before)
    assert (out / "runs" / "prior" / "logs" / "metrics.csv").is_file()
    pipe = load_pipeline(out, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a red circle", num_images_per_prompt=1, output_type="pt").images.shape == (
        1,
        3,
        16,
        16,
    )


def test_init_from_starts_a_stage_from_a_pipeline_component(saved_pipeline, folder, tmp_path):
    argv = [
        "configs/shapes/vqvae.yaml",
        f"data.path={folder}",
        "data.image_size=16",
        f"init_from={saved_pipeline}",
        f"output_dir={tmp_path / 'vq'}",
        "max_steps=0",
        *TINY,
    ]
    assert train.main(argv) == 0
    start, saved = weights(saved_pipeline / "image_tokenizer"), weights(tmp_path / "vq" / "model")
    assert all(torch.equal(start[k].float(), saved[k]) for k in start)  # max_steps=0: as loaded


def test_mismatched_init_and_shorthand_keys_are_named(saved_pipeline, tmp_path):
    config = load_config("configs/shapes/dvae.yaml", [f"init_from={saved_pipeline / 'prior'}"])
    with pytest.raises(ConfigError, match="holds a DALLEPrior, not a DiscreteVAE"):
        train.initial_model(config, "cfg")
    with pytest.raises(ConfigError, match="'seed' is in several sections"):
        load_config("configs/shapes/vae.yaml", ["seed=1"])
    with pytest.raises(ConfigError, match="'nonsense' names no single setting"):
        load_config("configs/shapes/vae.yaml", ["nonsense=1"])
    bad = load_config(
        "configs/custom/finetune.yaml",
        ["model.stages=[vocoder]", "data.path=x", f"init_from={tmp_path}"],
    )
    with pytest.raises(ConfigError, match="takes only model.stages"):
        train.train(bad, "cfg")
    absent = load_config(
        "configs/custom/finetune.yaml",
        ["model.stages=[decoder]", "data.path=x", f"init_from={saved_pipeline}"],
    )
    with pytest.raises(ConfigError, match="names decoder, which the pipeline at .* does not have"):
        train.train(absent, "cfg")


def test_finetune_the_unclip_stages_keeps_the_route_and_the_sampling_defaults(folder, tmp_path):
    source, out = tmp_path / "source", tmp_path / "tuned"
    pipe = tiny_pipeline(unclip=True)
    pipe.sampling_defaults.update(guidance_scale=2.0, temperature=0.7)
    pipe.save_pretrained(source)
    argv = [
        "configs/custom/finetune.yaml",
        f"data.path={folder}",
        f"init_from={source}",
        f"output_dir={out}",
        "model.stages=[diffusion_prior,decoder]",
        "max_steps=3",
        *TINY,
    ]
    assert train.main(argv) == 0
    for name, trained in [("prior", False), ("diffusion_prior", True), ("decoder", True)]:
        before, after = weights(source / name), weights(out / name)
        assert any(not torch.equal(before[k], after[k]) for k in before) == trained, name
    tuned = load_pipeline(out, device="cpu", route="unclip")
    assert tuned.sampling_defaults["temperature"] == 0.7
    tuned.set_progress_bar_config(disable=True)
    images = tuned("a red circle", num_inference_steps=2, output_type="pt").images
    assert images.shape[1:] == (3, 16, 16)


def test_finetune_the_masked_prior_keeps_the_other_routes_and_its_settings(folder, tmp_path):
    source, out = tmp_path / "source", tmp_path / "tuned"
    pipe = tiny_pipeline(maskgit=True)
    pipe.sampling_defaults.update(maskgit_num_inference_steps=6, guidance_scale=2.0)
    pipe.save_pretrained(source)
    argv = [
        "configs/custom/finetune.yaml",
        f"data.path={folder}",
        f"init_from={source}",
        f"output_dir={out}",
        "model.stages=[masked_prior]",
        "max_steps=3",
        *TINY,
    ]
    assert train.main(argv) == 0
    for name, trained in [("prior", False), ("clip", False), ("masked_prior", True)]:
        before, after = weights(source / name), weights(out / name)
        assert any(not torch.equal(before[k], after[k]) for k in before) == trained, name
    tuned = load_pipeline(out, device="cpu", route="maskgit")
    assert tuned.sampling_defaults["maskgit_num_inference_steps"] == 6
    tuned.set_progress_bar_config(disable=True)
    out = tuned("a red circle", 2, output_type="pt")
    assert out.images.shape == (2, 3, 16, 16) and out.settings.num_inference_steps == 6


def test_finetune_the_latent_diffusion_stages_retrains_the_denoiser_on_the_new_latents(
    folder, tmp_path
):
    source, out = tmp_path / "source", tmp_path / "tuned"
    base = tiny_pipeline()
    bundle = TextToImagePipeline(
        image_tokenizer=base.image_tokenizer, prior=base.prior, **ldm_tiny.parts()
    )
    bundle.save_pretrained(source)
    argv = [
        "configs/custom/finetune.yaml",
        f"data.path={folder}",
        f"init_from={source}",
        f"output_dir={out}",
        "model.stages=[vae,unet]",
        "max_steps=3",
        *TINY,
    ]
    assert train.main(argv) == 0
    for name, trained in [("prior", False), ("clip", False), ("vae", True), ("unet", True)]:
        before, after = weights(source / name), weights(out / name)
        assert any(not torch.equal(before[k], after[k]) for k in before) == trained, name
    # the denoiser's latents were those of the fine-tuned autoencoder, not the source's
    recorded = load_config(out / "runs" / "unet" / "config.yaml")
    assert Path(recorded.data.autoencoder) == out / "runs" / "vae" / "model"
    tuned = load_pipeline(out, device="cpu", route="ldm")
    tuned.set_progress_bar_config(disable=True)
    images = tuned("a red circle", num_inference_steps=2, output_type="pt").images
    assert images.shape[1:] == (3, 16, 16)


def test_a_latent_diffusion_pipeline_alone_fine_tunes_and_records_the_new_data_split(
    folder, tmp_path
):
    source, out = tmp_path / "source", tmp_path / "tuned"
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(source)  # no tokenizer, no prior
    (source / "heldout.json").write_text('{"held_out": ["elsewhere.png"]}')  # its own data's
    names = sorted(p.name for p in Path(folder).glob("*.png"))
    split = {"held_out": names[:5], "parts": {"concepts": names[:3], "tones": names[3:5]}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    argv = finetune_argv(source, out, folder, ["unet"], f"data.heldout={tmp_path / 'split.json'}")
    assert train.main(argv) == 0
    before, after = weights(source / "unet"), weights(out / "unet")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    recorded = json.loads((out / "heldout.json").read_text())
    assert sorted(recorded["held_out"]) == names[:5]  # the fine-tuning data's, not the source's
    assert recorded["parts"] == split["parts"]
    assert load_config(out / "runs" / "unet" / "config.yaml").data.image_size == 16  # the vae's


def finetune_argv(source, out, folder, stages, *extra):
    return [
        "configs/custom/finetune.yaml",
        f"data.path={folder}",
        f"init_from={source}",
        f"output_dir={out}",
        f"model.stages=[{','.join(stages)}]",
        "max_steps=3",
        *TINY,
        *extra,
    ]


def test_retraining_what_the_unclip_stages_read_leaves_them_out_with_a_warning(
    saved_unclip_pipeline, folder, tmp_path, caplog
):
    out = tmp_path / "tuned"
    argv = finetune_argv(saved_unclip_pipeline, out, folder, ["image_tokenizer", "clip", "prior"])
    with caplog.at_level("WARNING"):
        assert train.main(argv) == 0
    assert "leaves out diffusion_prior, decoder (the unCLIP route)" in caplog.text
    assert not (out / "decoder").exists() and not (out / "diffusion_prior").exists()
    with pytest.raises(ValueError, match="has the DALL-E route only"):
        load_pipeline(out, device="cpu", route="unclip")
    record = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    assert record["prior"]["reads"] == {
        "image_tokenizer": record["image_tokenizer"]["id"],
        "clip": record["clip"]["id"],
    }
    assert load_pipeline(out, device="cpu").prior is not None


def test_retraining_what_the_prior_reads_without_it_is_refused_before_training(
    saved_unclip_pipeline, folder, tmp_path, capsys
):
    out = tmp_path / "tuned"
    assert train.main(finetune_argv(saved_unclip_pipeline, out, folder, ["clip"])) == 2
    err = capsys.readouterr().err
    assert "every pipeline needs a prior" in err and "model.downstream=retrain" in err
    assert not out.exists()


def test_downstream_retrain_retrains_every_stage_reading_a_retrained_one(
    saved_unclip_pipeline, folder, tmp_path
):
    out = tmp_path / "tuned"
    argv = finetune_argv(saved_unclip_pipeline, out, folder, ["clip"], "model.downstream=retrain")
    assert train.main(argv) == 0
    for name, trained in [
        ("image_tokenizer", False),
        ("clip", True),
        ("prior", True),
        ("diffusion_prior", True),
        ("decoder", True),
    ]:
        before, after = weights(saved_unclip_pipeline / name), weights(out / name)
        assert any(not torch.equal(before[k], after[k]) for k in before) == trained, name
    recorded = load_config(out / "runs" / "decoder" / "config.yaml")
    assert Path(recorded.data.clip) == out / "runs" / "clip" / "model"  # the new CLIP
    record = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    assert record["decoder"]["reads"]["clip"] == record["clip"]["id"]
    tuned = load_pipeline(out, device="cpu", route="unclip")
    tuned.set_progress_bar_config(disable=True)
    assert tuned("a red circle", num_inference_steps=2, output_type="pt").images.shape[1:] == (
        3,
        16,
        16,
    )


def test_lora_fine_tuning_saves_the_adapters_alone_and_generate_draws_with_them(
    folder, tmp_path, capsys
):
    from t2i import evaluate, generate

    source, out = tmp_path / "source", tmp_path / "lora"
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(source)
    argv = finetune_argv(
        source, out, folder, ["unet"], "model.lora={rank: 2}", "train.learning_rate=1e-2"
    )
    assert train.main(argv) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "heldout.json",
        "lora.safetensors",
        "lora_config.json",
    ]
    record = json.loads((out / "lora_config.json").read_text())
    assert list(record["components"]) == ["unet"] and record["components"]["unet"]["rank"] == 2
    adapters = load_file(out / "lora.safetensors")
    assert adapters and all(".lora_" in k for k in adapters)
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # it trained
    drawn = {}
    for name, extra in [
        ("base", []),
        ("lora", ["--lora", str(out)]),
        ("zero", ["--lora", str(out), "--lora-scale", "0"]),
    ]:
        argv = ["a red circle", "--model", str(source), "-n", "1", "--out", str(tmp_path / name)]
        assert generate.main([*argv, *extra]) == 0
        with Image.open(next((tmp_path / name).glob("*.png"))) as image:
            drawn[name] = np.asarray(image.convert("RGB"))
    capsys.readouterr()
    assert not np.array_equal(drawn["lora"], drawn["base"])
    assert np.array_equal(drawn["zero"], drawn["base"])  # scale 0: the base pipeline
    png = next((tmp_path / "lora").glob("*.png"))  # drawn again from its record, adapters too
    assert generate.main(["--from-png", str(png), "--out", str(tmp_path / "again")]) == 0
    with Image.open(next((tmp_path / "again").glob("*.png"))) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), drawn["lora"])
    assert generate.main(["a red circle", "--model", str(out), "--out", str(tmp_path / "x")]) == 2
    assert f"their base, {source}, and --lora {out}" in capsys.readouterr().err
    assert evaluate.main([str(out), "--suite", "captioned", "--data", str(folder)]) == 2
    assert "a folder of LoRA adapters, not a pipeline" in capsys.readouterr().err
    assert evaluate.main([str(source), "--lora", str(folder)]) == 2  # not adapters
    assert "not a LoRA adapter folder" in capsys.readouterr().err


def test_lora_on_a_stage_others_read_needs_them_in_the_stages(
    saved_pipeline, folder, tmp_path, capsys
):
    argv = finetune_argv(saved_pipeline, tmp_path / "o", folder, ["clip"], "model.lora={rank: 2}")
    assert train.main(argv) == 2
    assert "model.lora on clip changes what prior read" in capsys.readouterr().err


def test_fine_tuning_swaps_in_a_given_autoencoder_and_retrains_what_reads_it(folder, tmp_path):
    from test_given_components import save_vae

    source, out = tmp_path / "source", tmp_path / "tuned"
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(source)  # 16 px, f2 latents
    vae = save_vae(tmp_path / "sd-vae", levels=2)
    argv = finetune_argv(source, out, folder, ["unet"], f"vae.pretrained={vae}", "vae.freeze=true")
    assert train.main(argv) == 0
    given = load_file(vae / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(weights(out / "vae")[f"vae.{k}"], v) for k, v in given.items())
    before, after = weights(source / "unet"), weights(out / "unet")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # retrained on its latents
    record = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    assert record["vae"]["origin"]["frozen"] is True
    assert record["unet"]["reads"]["vae"] == record["vae"]["id"]
    pipe = load_pipeline(out, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pipe(
        "a red circle", num_images_per_prompt=1, num_inference_steps=2, output_type="pt"
    ).images.shape == (1, 3, 16, 16)


def test_a_given_component_the_pipeline_lacks_or_a_bad_freeze_is_named(folder, tmp_path, capsys):
    source = tmp_path / "source"
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(source)
    for extra, named in [
        ([f"prior.pretrained={source}"], "prior.pretrained: the pipeline has no prior"),
        ([f"vae.pretrained={source}", "vae.freeze=maybe"], "vae.freeze='maybe': true or false"),
        ([f"vae.pretrained={tmp_path / 'nothing'}"], "no such file or folder"),
        ([f"clip.text_pretrained={tmp_path}"], "build the pipeline with the recipe"),
    ]:
        assert train.main(finetune_argv(source, tmp_path / "o", folder, ["unet"], *extra)) == 2
        assert named in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


def test_lora_on_clips_text_tower_and_the_denoiser_reading_it_load_as_one(folder, tmp_path):
    source, out = tmp_path / "source", tmp_path / "lora"
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(source)
    argv = finetune_argv(
        source, out, folder, ["clip", "unet"], "model.lora={rank: 2}", "train.learning_rate=1e-2"
    )
    assert train.main(argv) == 0
    record = json.loads((out / "lora_config.json").read_text())["components"]
    assert record["clip"]["scope"] == "model.transformer"  # open_clip's own text tower
    read = load_config(out / "runs" / "unet" / "config.yaml").data.clip
    assert Path(read) == out / "runs" / "clip" / "model"  # the denoiser read the adapted CLIP
    pipe = load_pipeline(source, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    ids = pipe.clip.tokenize(["a red circle"])
    base = pipe.clip.text_features(ids).states
    pipe.load_lora_weights(out)
    assert sorted(pipe.lora_components()) == ["clip", "unet"]
    assert not torch.equal(pipe.clip.text_features(ids).states, base)  # the text tower adapted
    pipe.set_lora_scale(0.0)
    assert torch.equal(pipe.clip.text_features(ids).states, base)


def test_fine_tuning_starts_the_denoiser_from_a_given_diffusers_unet(folder, tmp_path):
    from test_given_components import save_unet

    source, out = tmp_path / "source", tmp_path / "tuned"
    TextToImagePipeline(**ldm_tiny.parts()).save_pretrained(source)
    unet = save_unet(tmp_path / "unet", 32)  # the tiny CLIP's width, the tiny vae's latents
    argv = finetune_argv(source, out, folder, [], f"unet.pretrained={unet}")
    assert train.main(argv) == 0
    given = load_file(unet / "diffusion_pytorch_model.safetensors")
    tuned = weights(out / "unet")
    assert any(not torch.equal(tuned[f"unet.{k}"], v) for k, v in given.items())  # trained
    assert sorted(k.removeprefix("unet.") for k in tuned) == sorted(given)  # its own layout
    record = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    assert record["unet"]["origin"]["frozen"] is False


def test_fine_tuning_takes_a_diffusers_vqmodel_and_retrains_the_prior_on_its_codes(
    saved_pipeline, folder, tmp_path
):
    save_tiny_vqmodel(tmp_path / "vq", seed=4)
    out = tmp_path / "tuned"
    argv = finetune_argv(
        saved_pipeline,
        out,
        folder,
        [],
        f"image_tokenizer.pretrained={tmp_path / 'vq'}",
        "image_tokenizer.freeze=true",
        "model.downstream=retrain",
    )
    assert train.main(argv) == 0
    config = json.loads((out / "image_tokenizer" / "config.json").read_text())
    assert config["_class_name"] == "VQModelTokenizer"
    before, after = weights(saved_pipeline / "prior"), weights(out / "prior")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # retrained on its codes


def test_a_given_clip_of_another_context_length_is_named_before_training(
    saved_pipeline, folder, tmp_path, capsys
):
    _, checkpoint = save_tiny_open_clip(tmp_path, "t2i-ft-tiny", image_size=16)
    out = tmp_path / "tuned"
    argv = finetune_argv(
        saved_pipeline,
        out,
        folder,
        ["prior"],
        f"clip.pretrained={checkpoint}",
        "clip.architecture=t2i-ft-tiny",
        "clip.freeze=true",
    )
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "the prior cannot be fine-tuned on the given components" in err
    assert "context_length=32" in err and "20" in err
    assert not (out / "runs" / "prior").exists()  # nothing trained

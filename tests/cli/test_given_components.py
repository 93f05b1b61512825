"""Components a user brings to the recipe instead of training them (`STAGE.pretrained=PATH`,
`STAGE.freeze`, and CLIP's `clip.text_pretrained` / `clip.freeze_text`), from tiny folders in
the real formats made at test time: a diffusers AutoencoderKL, a diffusers
UNet2DConditionModel, a BERT saved with transformers, a saved t2i pipeline. Each loads, stays
frozen or trains as stated, the pipeline records where it came from and draws the same
images after the source folders are gone; each mismatch is one line naming both sides."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import gen, save_tiny_bert, save_tiny_open_clip, save_tiny_vqmodel
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file
from test_recipe_cli import RECIPE, TINY, make_folder

from t2i import train
from t2i.pipelines import load_pipeline

WORDS = "a red green blue disc square in".split()


def save_vae(folder, levels: int = 3, **kw):
    """A tiny diffusers AutoencoderKL (Stable Diffusion's layout), seeded."""
    torch.manual_seed(1)
    AutoencoderKL(
        block_out_channels=(8,) + (16,) * (levels - 1),
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=4,
        latent_channels=4,
        scaling_factor=0.5,
        **kw,
    ).save_pretrained(folder)
    return folder


def save_unet(folder, cross_attention_dim: int, channels: int = 4):
    """A tiny diffusers UNet2DConditionModel, seeded."""
    torch.manual_seed(2)
    UNet2DConditionModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    ).save_pretrained(folder)
    return folder


def argv(data, out, *extra):
    return [RECIPE, f"data.path={data}", f"output_dir={out}", "model.routes=[ldm]", *TINY, *extra]


def draw(out):
    pipe = load_pipeline(out, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        "a red disc",
        num_images_per_prompt=2,
        num_inference_steps=2,
        generator=gen(0),
        output_type="pt",
    ).images


@pytest.fixture(scope="module")
def given(tmp_path_factory):
    """A latent diffusion build given a frozen BERT text tower, a frozen diffusers
    autoencoder and a diffusers U-Net to start from (copies of them, deleted afterwards)."""
    root = tmp_path_factory.mktemp("given")
    data = make_folder(root / "data", n=40)
    sources = root / "sources"
    bert = save_tiny_bert(sources / "bert", WORDS)
    vae, unet = save_vae(sources / "vae"), save_unet(sources / "unet", 24)  # BERT's width
    originals = {
        k: load_file(p / "diffusion_pytorch_model.safetensors")
        for k, p in (("vae", vae), ("unet", unet))
    }
    extra = [
        f"clip.text_pretrained={bert}",
        "clip.freeze_text=true",
        f"autoencoder_kl.pretrained={vae}",
        "autoencoder_kl.freeze=true",
        f"ldm.pretrained={unet}",
    ]
    assert train.main(argv(data, root / "out", *extra)) == 0
    images = draw(root / "out")
    bert_weights = load_file(bert / "model.safetensors")
    shutil.rmtree(sources)  # the pipeline must not need them
    return root / "out", originals, bert_weights, images


def test_given_parts_stay_frozen_or_train_as_stated(given):
    out, originals, bert, _ = given
    vae = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    for key, value in originals["vae"].items():  # frozen: the given weights, in float16
        assert torch.equal(vae[f"vae.{key}"], value.half()), key
    unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    moved = [
        k for k, v in originals["unet"].items() if not torch.equal(unet[f"unet.{k}"], v.half())
    ]
    assert moved  # started from the given U-Net, then trained
    tower = load_file(out / "clip" / "text_model" / "model.safetensors")
    assert all(torch.equal(tower[k], v.half()) for k, v in bert.items() if k in tower)
    report = json.loads((out / "build_report.json").read_text())["stages"]
    assert report["autoencoder_kl"]["state"] == "given" and report["ldm"]["steps"] == 3


def test_the_pipeline_records_each_origin_and_draws_the_same_without_the_sources(given):
    out, _, _, images = given
    record = json.loads((out / "model_index.json").read_text())["_t2i_provenance"]
    assert record["vae"]["origin"]["frozen"] is True
    assert record["unet"]["origin"]["frozen"] is False
    assert record["clip"]["origin"]["text"]["frozen"] is True
    ids = {record[n]["origin"]["id"] for n in ("vae", "unet")} | {
        record["clip"]["origin"]["text"]["id"]
    }
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)
    assert torch.equal(draw(out), images)  # the sources were deleted after the build


def test_a_given_t2i_pipeline_component_fills_its_slot(given, tmp_path):
    out = given[0]
    data = make_folder(tmp_path / "data", n=40)
    extra = [f"autoencoder_kl.pretrained={out}", "autoencoder_kl.freeze=true"]
    assert train.main(argv(data, tmp_path / "o2", *extra)) == 0
    a = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "o2" / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "make, extra, named",
    [
        (
            lambda r: save_unet(r / "u", 32, channels=8),
            lambda p: [f"ldm.pretrained={p}"],
            "in_channels=8 but the autoencoder gives 4: give an autoencoder with latent_channels=8",
        ),
        (
            lambda r: save_unet(r / "u", 48),
            lambda p: [f"ldm.pretrained={p}"],
            "cross_attention_dim=48 but the CLIP gives 32: give a CLIP with text_width=48",
        ),
        (
            lambda r: save_vae(r / "v", levels=7),
            lambda p: [f"autoencoder_kl.pretrained={p}"],
            "image_size=32 must halve 6 times",
        ),
        (
            lambda r: save_vae(r / "v"),
            lambda p: [f"clip.pretrained={p}"],
            "fills a KLAutoencoder slot, not a CLIPModel",
        ),
        (lambda r: r / "nothing", lambda p: [f"ldm.pretrained={p}"], "no such file or folder"),
        (lambda r: r, lambda p: ["ldm.freeze=true"], "ldm.freeze=true uses a given component"),
        (lambda r: r, lambda p: ["autoencoder_kl.text_pretrained=x"], "a text tower is CLIP's"),
        (
            lambda r: r,
            lambda p: ["clip.freeze_text=maybe"],
            "clip.freeze_text='maybe': true or false",
        ),
    ],
)
def test_each_mismatch_is_one_line_naming_both_sides(make, extra, named, tmp_path, capsys):
    data = make_folder(tmp_path / "data", n=40)
    assert train.main(argv(data, tmp_path / "out", *extra(make(tmp_path)))) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_pickled_weights_are_never_loaded(tmp_path, capsys):
    folder = tmp_path / "vae"
    save_vae(folder, levels=2)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    data = make_folder(tmp_path / "data", n=40)
    assert train.main(argv(data, tmp_path / "out", f"autoencoder_kl.pretrained={folder}")) == 2
    assert "(pickle), which t2i never loads" in capsys.readouterr().err


def test_an_open_clip_checkpoint_file_is_the_frozen_clip(tmp_path):
    reference, weights = save_tiny_open_clip(tmp_path, "t2i-given-tiny", image_size=32)
    data = make_folder(tmp_path / "data", n=40)
    extra = [
        f"clip.pretrained={weights}",
        "clip.freeze=true",
        "clip.model.architecture=t2i-given-tiny",
    ]
    assert train.main(argv(data, tmp_path / "out", *extra)) == 0
    saved = load_file(tmp_path / "out" / "clip" / "diffusion_pytorch_model.safetensors")
    for key, value in reference.state_dict().items():
        assert torch.equal(saved[f"model.{key}"], value.half()), key
    unet = json.loads((tmp_path / "out" / "unet" / "config.json").read_text())
    assert unet["clip_width"] == 32 and unet["context_length"] == 20  # read from the given CLIP


def test_a_diffusers_vqmodel_is_the_frozen_tokenizer_of_the_code_routes(tmp_path):
    save_tiny_vqmodel(tmp_path / "vq", codes=24, seed=4)
    data = make_folder(tmp_path / "data", n=40)
    extra = ["model.routes=[dalle]", f"vqvae.pretrained={tmp_path / 'vq'}", "vqvae.freeze=true"]
    args = [a for a in argv(data, tmp_path / "out", *extra) if a != "model.routes=[ldm]"]
    assert train.main(args) == 0
    prior = json.loads((tmp_path / "out" / "prior" / "config.json").read_text())
    assert prior["num_tokens"] == 24 and prior["grid_sizes"] == [8]  # its codes: 32 px / f4
    given = load_file(tmp_path / "vq" / "diffusion_pytorch_model.safetensors")
    saved = load_file(tmp_path / "out" / "image_tokenizer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(saved[f"vq.{k}"], v.half()) for k, v in given.items())
    pipe = load_pipeline(tmp_path / "out", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a red disc", num_images_per_prompt=1, output_type="pt").images.shape == (
        1,
        3,
        32,
        32,
    )

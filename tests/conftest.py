"""Shared test set-up: this folder is importable, so tests can use `model_checks`; a tiny
pipeline (a saved bundle's components, and its routes' pipelines) for the pipeline and CLI
tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as a module (the scripts folder is no package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_shipped_weights(folder: Path) -> int:
    """Assert that a shipped folder's weights are safetensors (no pickle) in float16 (buffers:
    counts and flags may be integers or booleans), and that it holds some; return the bytes of
    all its files."""
    from safetensors import safe_open

    files = [f for f in folder.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    weights = [f for f in files if f.suffix == ".safetensors"]
    assert weights, folder
    for f in weights:
        with safe_open(f, "pt") as st:
            dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
        assert dtypes <= {"F16", "I64", "I32", "BOOL"}, (f, dtypes)
    return sum(f.stat().st_size for f in files)


def save_tiny_bert(folder: Path, words: list[str], layers: int = 2) -> Path:
    """A tiny BERT (width 24) and its WordPiece tokenizer over `words`, seeded, saved into
    `folder` as transformers saves them (a pretrained text tower's folder, made at test time)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def save_tiny_vqmodel(folder: Path, codes: int = 32, seed: int = 0) -> Path:
    """A tiny diffusers VQModel (f4, `codes` codes of 4 channels), seeded, saved as diffusers
    saves it (LDM's VQ autoencoders' layout)."""
    from diffusers import VQModel

    torch.manual_seed(seed)
    VQModel(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=4,
        latent_channels=4,
        num_vq_embeddings=codes,
        vq_embed_dim=4,
    ).save_pretrained(folder)
    return folder


def save_tiny_open_clip(folder: Path, name: str, image_size: int, context: int = 20):
    """A tiny open_clip architecture registered as `name`, and its random weights (seed 3)
    saved in `folder`/NAME.safetensors; returns (the model, the weights file)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": image_size,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": image_size // 4,
        },
        "text_cfg": {
            "context_length": context,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{name}.json")
    torch.manual_seed(3)
    model = open_clip.create_model(name, pretrained=None).eval()
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return model, weights


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator with this seed (the tests' source of randomness)."""
    return torch.Generator().manual_seed(seed)


def tiny_pipeline(
    text_encoder: str = "clip", unclip: bool = False, pixels: bool = False, maskgit: bool = False
):
    """A small untrained bundle, `TextToImagePipeline` (16 px images, a 4 x 4 code grid),
    seeded, so every call builds the same models; with `unclip`, also a diffusion prior and a
    decoder (over codes; with `pixels`, a pixel diffusion decoder); with `maskgit`, a masked
    prior. `.route("dalle")` /
    `.route("unclip")` is a route's pipeline over the same components (or `tiny_route`)."""
    import tiny

    from t2i import TextToImagePipeline
    from t2i.models import (
        VQVAE,
        CLIPModel,
        DALLEPrior,
        DiffusionDecoder,
        DiffusionPrior,
        MaskGITPrior,
    )

    torch.manual_seed(0)
    clip = CLIPModel(**tiny.CLIP)
    tokenizer = VQVAE(image_size=16, **tiny.VQ)
    prior = DALLEPrior(
        num_tokens=32,
        grid_sizes=[4],
        context_length=32,
        text_encoder=text_encoder,
        clip_width=32,
        dim=32,
        depth=1,
        heads=2,
    )
    stages = {}
    if unclip:
        small = dict(dim=32, depth=1, heads=2)
        stages["diffusion_prior"] = DiffusionPrior(
            embed_dim=16, clip_width=32, num_train_timesteps=100, **small
        ).eval()
        stages["decoder"] = DALLEPrior(
            num_tokens=32,
            grid_sizes=[4],
            context_length=2,
            text_encoder="clip_image",
            embed_dim=16,
            **small,
        ).eval()
        if pixels:
            stages["decoder"] = DiffusionDecoder(
                image_size=16,
                embed_dim=16,
                block_out_channels=(8, 16),
                attention_levels=(False, True),
                norm_num_groups=4,
                num_train_timesteps=100,
            ).eval()
    if maskgit:  # built last: the other models' seeded weights stay as they were
        stages["masked_prior"] = MaskGITPrior(
            num_tokens=32,
            grid_sizes=[4],
            context_length=32,
            text_encoder=text_encoder,
            clip_width=32,
            dim=32,
            depth=1,
            heads=2,
        ).eval()
    pipe = TextToImagePipeline(
        clip=clip.eval(), image_tokenizer=tokenizer.eval(), prior=prior.eval(), **stages
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_route(route: str = "dalle", **kw):
    """`tiny_pipeline(**kw).route(route)`: the route's pipeline (DALLEPipeline,
    UnCLIPPipeline or MaskGITPipeline; the bundle gets the route's components)."""
    kw["unclip"] = kw.get("unclip", False) or route == "unclip"
    kw["maskgit"] = kw.get("maskgit", False) or route == "maskgit"
    return tiny_pipeline(**kw).route(route)


@pytest.fixture(scope="session")
def saved_pipeline(tmp_path_factory):
    """A tiny bundle with the DALL-E route only, saved to a directory (shared by the pipeline
    and CLI tests; read it, do not write to it)."""
    path = tmp_path_factory.mktemp("pipeline")
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def saved_unclip_pipeline(tmp_path_factory):
    """A tiny bundle with both routes (the unCLIP decoder over codes), saved to a directory
    (shared; read it, do not write to it)."""
    path = tmp_path_factory.mktemp("unclip_pipeline")
    tiny_pipeline(unclip=True).save_pretrained(path)
    return path

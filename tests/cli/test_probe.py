"""A user's probe, kept: for the command lines (generate, train, evaluate, the demo) each bad
input is one line naming the flag or file and the value, exit status 2, no traceback, and it
arrives before the slow work (a loader replaced by one that fails the test, or the torch-free
precheck); for the Python API (load_pipeline, a route's call, from_pretrained) an error that
names the argument, or the file and key a user edited or a disk damaged."""

from __future__ import annotations

import json

import pytest
import torch

import t2i.pipelines
from t2i.generate import main


@pytest.fixture
def no_loading(monkeypatch):
    def loaded(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the bad input was named")

    monkeypatch.setattr(t2i.pipelines, "load_pipeline", loaded)


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--route", "unclip"], "--route unclip: "),
        (["--init-image", "{bad}"], "--init-image {bad}: not an image"),
        (["--model", "{empty}"], "--model {empty}: no model_index.json"),
        (["--lora", "{empty}"], "--lora {empty}: no lora_config.json"),
        (["--prompts-file", "{latin}"], "--prompts-file {latin}: not UTF-8 text (byte 0xe9"),
        (["--lora-scale", "0.5"], "--lora-scale scales the adapters of --lora"),
    ],
)
def test_bad_input_is_named_before_the_pipeline_loads(
    extra, named, saved_pipeline, tmp_path, capsys, no_loading
):
    files = {"bad": tmp_path / "bad.png", "empty": tmp_path / "empty", "latin": tmp_path / "l.txt"}
    files["bad"].write_bytes(b"not an image")
    files["empty"].mkdir()
    files["latin"].write_bytes("a café".encode("latin-1"))
    given = [e.format(**files) for e in extra]
    model = [] if "--model" in given else ["--model", str(saved_pipeline)]
    code = main(["a red circle", *model, *given, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert named.format(**files) in err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["{missing}"], "MODEL {missing}: no such folder, nor a shipped pipeline"),
        (["emoji", "--suite", "captioned", "--data", "{missing}"], "--data {missing}: no such"),
        (["emoji", "--split", "{missing}"], "--split {missing}: no such file"),
        (["emoji", "--eval-clip", "{missing}"], "--eval-clip {missing}: no such folder"),
        (["emoji", "--lora", "{here}"], "--lora {here}: no lora_config.json"),
        (["emoji", "--grids", "{here}"], "--grids {here}: exists; choose a new folder"),
    ],
)
def test_evaluate_names_a_wrong_path_before_its_heavy_imports(argv, named, tmp_path, capsys):
    from t2i.cli import precheck_evaluate  # what `python -m t2i.evaluate` runs first (torch-free)

    paths = {"missing": tmp_path / "missing", "here": tmp_path}
    with pytest.raises(SystemExit) as stop:
        precheck_evaluate([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and named.format(**paths) in err and err.count("\n") == 1


def test_an_upscale_that_would_fill_the_memory_is_refused(saved_pipeline, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out"), "--model", str(saved_pipeline)]
    with pytest.raises(SystemExit) as stop:  # 100,000 x a 32 px image: killed at 52 s before
        main(["a red circle", *out, "--upscale", "100000"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--upscale: 100000: must be a whole number in [1, 64]" in err


# ---- train: the config and the command line, before the heavy imports ---------------------

BROKEN_YAML = "model:\n  type: vae\n  channels: [8, 16\n"


@pytest.mark.parametrize(
    "text, extra, named",
    [
        (BROKEN_YAML, [], "not valid YAML: line 3, column 13: while parsing a flow sequence"),
        (b"# caf\xe9\nmodel: {type: vae}\n", [], "not UTF-8 text (byte 0xe9 at offset 5, line 1)"),
        ("", ["train.mixed_precision=fp8"], "train.mixed_precision='fp8': use 'auto'"),
        ("", ["train.ema_decay=1.5"], "train.ema_decay=1.5 must be null or in [0, 1)"),
        ("", ["train.seed=-1"], "train.seed=-1 must be in [0, 2**32 - 1]"),
        ("", ["data.seed=4294967296"], "data.seed=4294967296 must be in [0, 2**32 - 1]"),
        ("", ["train.weight_decay=nan"], "train.weight_decay=nan must be a finite number >= 0"),
        ("", ["train.max_grad_norm=0"], "train.max_grad_norm=0.0 must be null or a number > 0"),
        ("", ["train.adam_betas=[0.9]"], "train.adam_betas=[0.9] must be two numbers in [0, 1)"),
        ("", ["train.lr_schedule=cosin"], "train.lr_schedule='cosin': use one of linear, cosine"),
        ("", ["data.caption_drop_prob=1"], "data.caption_drop_prob=1.0 must be in [0, 1)"),
        ("", ["train.resume={missing}"], "train.resume='{missing}': no complete checkpoint"),
        ("", ["model.channels=[8, 16"], "override 'model.channels=[8, 16': not a YAML value"),
    ],
)
def test_train_names_a_bad_config_value_in_one_line_before_its_heavy_imports(
    text, extra, named, tmp_path, capsys
):
    from t2i.cli import precheck_train  # what `python -m t2i.train` runs first (torch-free)

    config = tmp_path / "run.yaml"
    body = text or f"model: {{type: vae}}\ntrain: {{output_dir: {tmp_path / 'out'}}}\n"
    config.write_bytes(body if isinstance(body, bytes) else body.encode())
    paths = {"missing": tmp_path / "missing"}
    with pytest.raises(SystemExit) as stop:
        precheck_train([str(config), *(e.format(**paths) for e in extra)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    source = "command line: " if "override" in named else f"{config}: "
    assert f"{source}{named.format(**paths)}" in err


def test_the_known_lr_schedules_are_diffusers_own():
    from diffusers.optimization import SchedulerType

    from t2i.config import LR_SCHEDULES

    assert set(LR_SCHEDULES) == {s.value for s in SchedulerType}


# ---- evaluate and the demo ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, named",
    [
        (["emoji", "--n", "0"], "argument --n: 0: must be a whole number >= 1"),
        (["emoji", "--suite", "nonsense"], "argument --suite: invalid choice: 'nonsense'"),
        (["emoji", "--batch-size", "x"], "argument --batch-size: 'x' is not a whole number"),
        (["{here}"], "MODEL {here}: no model_index.json, config.json or model/config.json"),
        (
            ["emoji", "--split", "{latin}"],
            "--split {latin}: not UTF-8 text (byte 0xe9 at offset 18, line 1)",
        ),
        (
            ["emoji", "--split", "{broken}"],
            "--split {broken}: not a held-out split (JSONDecodeError",
        ),
    ],
)
def test_evaluate_names_a_bad_number_suite_or_model_folder_at_once(argv, named, tmp_path, capsys):
    from t2i.cli import precheck_evaluate

    paths = {"here": tmp_path, "latin": tmp_path / "l.json", "broken": tmp_path / "b.json"}
    paths["latin"].write_bytes(b'{"held_out": ["caf\xe9"]}')
    paths["broken"].write_text('{"held_out": [1, 2')
    with pytest.raises(SystemExit) as stop:
        precheck_evaluate([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert named.format(**paths) in err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--port", "99999"], "argument --port: 99999: must be a port, 1-65535"),
        (["--model", "{here}"], "--model {here}: no model_index.json; not a saved pipeline"),
    ],
)
def test_the_demo_names_a_bad_port_or_model_before_it_loads(
    argv, named, tmp_path, capsys, monkeypatch
):
    import t2i.demo

    def loaded(*args, **kwargs):
        raise AssertionError("the demo loaded a pipeline before the bad input was named")

    monkeypatch.setattr(t2i.demo, "Demo", loaded)
    try:
        code = t2i.demo.main([a.format(here=tmp_path) for a in argv])
    except SystemExit as stop:  # argparse's one-line error
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and named.format(here=tmp_path) in err


# ---- generate: the latent route's steps on its saved schedule, before the weights load -----


@pytest.fixture(scope="module")
def saved_ldm(tmp_path_factory):
    import ldm_tiny

    path = tmp_path_factory.mktemp("ldm_pipeline")
    ldm_tiny.pipeline().save_pretrained(path)
    return path


@pytest.mark.parametrize("sampler", ["dpm", "unipc"])
def test_steps_a_solver_would_divide_by_zero_at_are_named_before_the_weights_load(
    sampler, saved_ldm, tmp_path, capsys, no_loading
):
    argv = ["a red circle", "--model", str(saved_ldm), "--route", "ldm", "--steps", "1000"]
    code = main([*argv, "--sampler", sampler, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--steps 1000 --sampler {sampler}: " in err and "lands two steps on timestep" in err
    assert not (tmp_path / "out").exists()


# ---- the Python API: load_pipeline, a route's call, from_pretrained -------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_pipeline_names_a_device_this_machine_lacks(saved_pipeline):
    with pytest.raises(ValueError, match="device='cuda': no CUDA device here"):
        t2i.pipelines.load_pipeline(saved_pipeline, device="cuda")


@pytest.mark.parametrize("prompt", [None, 5, ["a red circle", 7]])
def test_a_prompt_that_is_not_text_is_named(prompt, saved_pipeline):
    pipe = t2i.pipelines.load_pipeline(saved_pipeline)
    with pytest.raises(TypeError, match=r"prompt=.*: give a string or a list of strings"):
        pipe(prompt, num_images_per_prompt=1)


def _edited_unet(saved_ldm, tmp_path, edit):
    import shutil

    folder = tmp_path / "unet"
    shutil.copytree(saved_ldm / "unet", folder)
    edit(folder)
    return folder


def _set_config(key, value):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config[key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def _truncate(folder):
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.mark.parametrize(
    "edit, named",
    [
        (_set_config("block_out_channels", "abc"), "'block_out_channels' must be Sequence"),
        (_set_config("block_out_channels", [16, "x"]), "'block_out_channels[1]' must be int"),
        (_set_config("attention_head_dim", 8.5), "'attention_head_dim' must be int, got 8.5"),
        (lambda f: (f / "config.json").write_bytes(b'{"a": "caf\xe9"}'), "not UTF-8 text"),
        (lambda f: (f / "config.json").write_text("{"), "not JSON (line 1, column 2)"),
        (_truncate, "diffusion_pytorch_model.safetensors: truncated or unreadable"),
        (lambda f: (f / "diffusion_pytorch_model.safetensors").unlink(), "no weights file"),
    ],
)
def test_from_pretrained_names_the_file_and_key_of_a_damaged_or_edited_model(
    edit, named, saved_ldm, tmp_path
):
    from t2i.models import LatentDenoiser, load_model

    folder = _edited_unet(saved_ldm, tmp_path, edit)
    for load in (LatentDenoiser.from_pretrained, load_model):
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            load(folder)
        assert named in str(err.value) and str(folder) in str(err.value)


def test_from_pretrained_takes_a_dtype_by_name(saved_ldm):
    from t2i.models import LatentDenoiser

    model = LatentDenoiser.from_pretrained(saved_ldm / "unet", torch_dtype="float16")
    assert model.dtype == torch.float16  # diffusers alone loads float32 and says so
    with pytest.raises(ValueError, match="torch_dtype='float17'"):
        LatentDenoiser.from_pretrained(saved_ldm / "unet", torch_dtype="float17")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["configs/custom/pipeline.yaml", "data.path={missing}"], "data.path='{missing}': no such"),
        (["configs/custom/pipeline.yaml", "data.path={empty}"], "data.path='{empty}': an empty"),
        (["configs/custom/finetune.yaml", "init_from={missing}"], "init_from='{missing}': no such"),
        (
            ["configs/custom/pipeline.yaml", "data.path={missing}/*.tar"],
            "data.path='{missing}/*.tar': the pattern matches no file",
        ),
    ],
)
def test_a_recipes_data_and_a_finetunings_start_are_named_before_the_imports(
    argv, named, tmp_path, capsys
):
    from t2i.cli import precheck_train

    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    paths["empty"].mkdir()
    extra = [f"output_dir={tmp_path / 'out'}"]
    with pytest.raises(SystemExit) as stop:
        precheck_train([a.format(**paths) for a in argv] + extra)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert f"{argv[0]}: {named.format(**paths)}" in err

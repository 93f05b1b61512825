"""A user's probe of generate, kept: each bad input is one line naming the flag and the value,
exit status 2, no traceback, and it arrives before the pipeline loads (the loader is replaced
by one that fails the test)."""

from __future__ import annotations

import pytest

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

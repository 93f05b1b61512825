"""The console scripts `pip install` puts in the venv's bin/ (`t2i-generate`, `t2i-train`, ...):
they run without activating the venv and are the module command lines they stand for."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import t2i

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
DECLARED = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
INSTALLED = {e.name: e for e in entry_points(group="console_scripts") if e.name.startswith("t2i-")}
BIN = Path(sys.executable).parent
needs_install = pytest.mark.skipif(
    not all((BIN / name).is_file() for name in DECLARED),
    reason="t2i's console scripts are not installed here (pip install -e . puts them in bin/)",
)


def test_every_declared_script_is_installed_and_loads_a_callable():
    assert set(INSTALLED) == set(DECLARED)
    for name, entry in INSTALLED.items():
        assert callable(entry.load()), name


@needs_install
def test_t2i_generate_is_the_generate_command_line():
    done = subprocess.run([BIN / "t2i-generate", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and t2i.__version__ in done.stdout


@needs_install
def test_t2i_train_refuses_a_bad_key_in_one_line_as_python_m_t2i_train_does(tmp_path):
    argv = ["configs/shapes/vae.yaml", "train.max_stepz=3", f"train.output_dir={tmp_path}"]
    done = subprocess.run([BIN / "t2i-train", *argv], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "Did you mean 'max_steps'?" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    usage = subprocess.run([BIN / "t2i-train", "--help"], capture_output=True, text=True)
    assert "Train any t2i model" in usage.stdout  # train.py's own description, read unimported


@needs_install
def test_t2i_data_inspect_reports_a_missing_folder_in_one_line(tmp_path):
    done = subprocess.run(
        [BIN / "t2i-data", "inspect", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "nowhere" in done.stderr and "Traceback" not in done.stderr

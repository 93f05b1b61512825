"""The import layering of `[tool.importlinter]` in pyproject.toml, checked by `lint-imports`
(part of `make lint`): on a copy of the package, an upward import must break a contract and
the unchanged copy must keep them all."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(),
    reason=f"import-linter is not installed ({LINT_IMPORTS} missing; pip install -e '.[dev]')",
)


def copy_package(tmp_path: Path) -> Path:
    """t2i copied to tmp_path/t2i, without the shipped assets and byte-code."""
    shutil.copytree(
        ROOT / "t2i", tmp_path / "t2i", ignore=shutil.ignore_patterns("assets", "__pycache__")
    )
    return tmp_path / "t2i"


def lint_imports(where: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under `where` (first on PYTHONPATH, so the copy is analysed,
    not the installed one), with the repository's contracts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_upward_import_breaks_a_contract(tmp_path):
    package = copy_package(tmp_path)
    with open(package / "models" / "vae.py", "a") as f:
        f.write("\nimport t2i.pipelines  # planted\n")
    result = lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "BROKEN" in output, output
    assert "t2i.models.vae" in output and "t2i.pipelines" in output, output


def test_package_keeps_its_layers(tmp_path):
    copy_package(tmp_path)
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

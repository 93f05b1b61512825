"""A captioned image folder from an Iconify emoji set (npm) and the Unicode CLDR annotations.

    python scripts/datasets/iconify_emoji.py data/fluent-emoji --size 128
    python -m t2i.train configs/custom/pipeline.yaml data.path=data/fluent-emoji ...

The icon set `@iconify-json/SET` and the CLDR packages `cldr-annotations-full` and
`cldr-annotations-derived-full` (English names and keywords; the derived one covers keycaps,
hair styles and families) are fetched at pinned versions with `npm pack` into a temporary
folder; `--from` (a .tgz or an unpacked folder) and `--cldr` (repeatable) read copies already
here instead, and without CLDR the captions come from the icon names alone.

Which icons become images: every icon of `icons.json` except its aliases (the same drawing
under a second name, or mirrored), the icons marked hidden (kept by Iconify for old names),
and the skin-tone variants: an icon whose code points in `chars.json` hold a Fitzpatrick
modifier (U+1F3FB..U+1F3FF) is one of five near-copies of a base emoji, and it is left out, so
fluent-emoji-flat 1.2.6 gives its ~1,600 base emoji (3,174 icons). Without `chars.json` no
variant can be told apart and all are kept. Each SVG is drawn by resvg at SIZE x SIZE
(RGBA, transparent background, a non-square icon centred); one that does not parse or draws
nothing is reported and skipped.

OUT gets the "imagefolder" layout `t2i.data.captioned` reads: `images/NAME.png` and
`metadata.jsonl` with `{"file_name", "caption": [captions], "name"}` per line, each caption
lowercase and under 20 words: the name ("grinning face with big eyes"), CLDR's name and
"a ... emoji" for both, and CLDR's keywords ("awesome, big, eyes, face, grin, ..."); and
`LICENSE.md` (licences, authors, versions, the command) with the packages' licence files
under `licenses/`. Nothing is overwritten: a non-empty OUT needs `--force`.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import resvg_py
from PIL import Image

ICON_SETS = {"fluent-emoji-flat": "1.2.6", "twemoji": "1.2.5"}  # @iconify-json/SET pinned
CLDR_PACKAGES = {"cldr-annotations-full": "48.2.0", "cldr-annotations-derived-full": "48.2.0"}
CLDR_FILES = ("annotations/en/annotations.json", "annotationsDerived/en/annotations.json")
SKIN_TONES = {f"{c:x}" for c in range(0x1F3FB, 0x1F400)}  # Fitzpatrick modifiers, hex
MAX_WORDS = 19  # a caption is shorter than 20 words
NO_AN = ("uni", "use", "eu", "one", "ufo")  # vowel-initial words taking "a"
LICENSE_FILE = re.compile(r"^(licen[cs]e|copying|notice)", re.IGNORECASE)
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'viewBox="{left} {top} {width} {height}" width="{size}" height="{size}">{body}</svg>'
)


class Icon(NamedTuple):
    """One drawing of an icon set: its SVG body and view box, and its emoji if known."""

    name: str
    body: str
    box: tuple[float, float, float, float]  # left, top, width, height
    char: str | None  # the emoji's characters, from chars.json


class Package:
    """An npm package's files, read from its .tgz or from an unpacked folder.

    Args:
        path: a .tgz (files under `package/`), the unpacked `package/` folder, or a folder
            holding it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.files: dict[str, bytes] = {}
        if self.path.is_file():
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar.getmembers():
                    name = member.name.split("/", 1)[-1]  # drop the `package/` folder
                    if member.isfile() and _wanted(name):
                        self.files[name] = tar.extractfile(member).read()
        else:
            root = self.path / "package" if (self.path / "package").is_dir() else self.path
            for file in root.rglob("*"):
                name = file.relative_to(root).as_posix()
                if file.is_file() and _wanted(name):
                    self.files[name] = file.read_bytes()

    def json(self, name: str) -> dict | None:
        """The parsed JSON file `name` (relative to the package root), None when absent."""
        return json.loads(self.files[name]) if name in self.files else None

    @property
    def meta(self) -> dict:
        """package.json (name, version, license), empty when the package has none."""
        return self.json("package.json") or {}

    @property
    def label(self) -> str:
        """name@version, or the path when package.json lacks them."""
        meta = self.meta
        return f"{meta['name']}@{meta['version']}" if "name" in meta else str(self.path)


def _wanted(name: str) -> bool:
    """Whether a package file is read: its top-level files and the English CLDR files."""
    return "/" not in name or name in CLDR_FILES


# ---- command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump)."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = _Parser(
        prog="python scripts/datasets/iconify_emoji.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="the folder to write (must be empty or new)")
    p.add_argument("--set", choices=sorted(ICON_SETS), help="icon set (default fluent-emoji-flat)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--from", dest="source", metavar="PATH", help="a local icon package")
    p.add_argument(
        "--cldr", action="append", metavar="PATH", help="a local CLDR annotations package"
    )
    p.add_argument("--limit", type=int, help="write at most N images (a quick look)")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, naming the flag, or None (before any slow work)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"OUT {out} is a file, not a folder"
    if out.is_dir() and any(out.iterdir()) and not args.force:
        return f"OUT {out} exists and is not empty; choose another or pass --force"
    if not 8 <= args.size <= 4096:
        return f"--size {args.size}: expected 8 to 4096 pixels"
    if args.limit is not None and args.limit < 1:
        return f"--limit {args.limit}: expected a positive count"
    for flag, path in [("--from", args.source), *(("--cldr", p) for p in args.cldr or [])]:
        if path is not None and not Path(path).exists():
            return f"{flag} {path}: no such file or folder"
    if args.source and Path(args.source).is_dir() and not _find_icons(Path(args.source)):
        return f"--from {args.source}: no icons.json in it (nor in its package/ folder)"
    for flag, path in [("--from", args.source), *(("--cldr", p) for p in args.cldr or [])]:
        if path is not None and Path(path).is_file() and not tarfile.is_tarfile(path):
            return f"{flag} {path}: not a .tgz package nor a folder"
    if (args.source is None or args.cldr is None) and shutil.which("npm") is None:
        return "npm is not on PATH; give the packages with --from and --cldr"
    return None


def _find_icons(folder: Path) -> bool:
    """Whether an unpacked icon package is at `folder` (or its package/ subfolder)."""
    return (folder / "icons.json").is_file() or (folder / "package" / "icons.json").is_file()


# ---- fetching ----------------------------------------------------------------------------


def npm_pack(spec: str, dest: Path) -> Path:
    """`npm pack SPEC` into `dest`: the downloaded .tgz.

    Args:
        spec: name@version.
        dest: an empty folder of its own (the .tgz is the one file npm leaves there).
    """
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "pack", spec], cwd=dest, capture_output=True, text=True, timeout=600
    )
    tgz = sorted(dest.glob("*.tgz"))
    if done.returncode != 0 or not tgz:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"npm pack {spec} failed ({done.returncode}): {last}")
    return tgz[0]


def load_packages(args: argparse.Namespace, tmp: Path) -> tuple[Package, list[Package]]:
    """The icon package and the CLDR packages: the given paths, else fetched with npm."""
    icon_set = args.set or "fluent-emoji-flat"
    if args.source:
        icons = Package(args.source)
    else:
        icons = Package(npm_pack(f"@iconify-json/{icon_set}@{ICON_SETS[icon_set]}", tmp / "i"))
    return icons, load_cldr(args.cldr, tmp)


def load_cldr(paths: list[str] | None, tmp: Path) -> list[Package]:
    """The CLDR packages: the given paths, else CLDR_PACKAGES fetched with npm.

    Args:
        paths: local packages (--cldr), or None to fetch them.
        tmp: a temporary folder for the downloads.
    """
    if paths is not None:
        return [Package(p) for p in paths]
    specs = [f"{name}@{version}" for name, version in CLDR_PACKAGES.items()]
    return [Package(npm_pack(spec, tmp / f"c{i}")) for i, spec in enumerate(specs)]


# ---- icons and captions ------------------------------------------------------------------


def read_icons(package: Package) -> tuple[dict, list[Icon], dict[str, int]]:
    """The icon set's JSON, its drawable icons and how many of each kind were left out.

    Args:
        package: an @iconify-json package (icons.json, optional chars.json).
    """
    data, shown = visible_icons(package)
    variants = {icon.name for icon in shown if icon.char and SKIN_TONES & set(code_points(icon))}
    left_out = {
        "aliases": len(data.get("aliases", {})),
        "hidden": len(data["icons"]) - len(shown),
        "skin-tone variants": len(variants),
    }
    return data, [icon for icon in shown if icon.name not in variants], left_out


def visible_icons(package: Package) -> tuple[dict, list[Icon]]:
    """The icon set's JSON and its icons, aliases and hidden ones (old names) left out.

    Args:
        package: an @iconify-json package (icons.json, optional chars.json).
    """
    data = package.json("icons.json")
    chars = {name: hex_ for hex_, name in (package.json("chars.json") or {}).items()}
    icons = []
    for name, icon in data["icons"].items():
        if not icon.get("hidden"):
            box = tuple(icon.get(k, data.get(k, d)) for k, d in _BOX_DEFAULTS)
            codes = chars[name].split("-") if name in chars else []
            char = "".join(chr(int(c, 16)) for c in codes) if codes else None
            icons.append(Icon(name, icon["body"], box, char))
    return data, icons


def code_points(icon: Icon) -> list[str]:
    """The icon's code points as chars.json writes them (lowercase hex), [] when unknown."""
    return [f"{ord(c):x}" for c in icon.char or ""]


_BOX_DEFAULTS = (("left", 0), ("top", 0), ("width", 16), ("height", 16))  # Iconify's defaults


def read_cldr(packages: list[Package]) -> dict[str, dict]:
    """Emoji (without U+FE0F) and lowercase name -> CLDR annotation ({"default", "tts"}).

    Args:
        packages: cldr-annotations-full / -derived-full packages (English files are read).
    """
    found: dict[str, dict] = {}
    for package in packages:
        for file in CLDR_FILES:
            data = package.json(file)
            if data is None:
                continue
            (top,) = data.values()  # {"annotations": ...} or {"annotationsDerived": ...}
            for char, annotation in top["annotations"].items():
                found.setdefault(char.replace("\ufe0f", ""), annotation)
                for tts in annotation.get("tts", []):
                    found.setdefault(_clean(tts), annotation)
    return found


def captions(name: str, annotation: dict | None) -> list[str]:
    """An icon's captions: its name, CLDR's name, each as "a ... emoji", CLDR's keywords.

    Args:
        name: the icon's name ("grinning-face-with-big-eyes").
        annotation: its CLDR annotation ({"tts": [name], "default": [keywords]}), or None.
    """
    names = [_clean(name.replace("-", " "))]
    annotation = annotation or {}
    names += [_clean(tts.replace(":", "")) for tts in annotation.get("tts", [])]  # "keycap: #"
    found = [c for n in names for c in (n, f"{_article(n)} {n} emoji")]
    keywords = cldr_keywords(annotation, MAX_WORDS)
    if keywords:
        found.append(", ".join(keywords))
    found = [c for c in found if c and len(c.split()) <= MAX_WORDS]
    return list(dict.fromkeys(found))  # deduplicated, in order


def cldr_keywords(annotation: dict, budget: int) -> list[str]:
    """CLDR's keywords for an emoji, cleaned, in order, as many as fit in `budget` words.

    Args:
        annotation: its CLDR annotation ({"default": [keywords], ...}).
        budget: the most words the keywords may hold together.
    """
    keywords: list[str] = []
    for keyword in annotation.get("default", []):
        if len(" ".join(keywords + [keyword]).split()) > budget:
            break
        keywords.append(_clean(keyword))
    return keywords


def _clean(text: str) -> str:
    """Lowercase, plain apostrophes, single spaces."""
    return " ".join(text.lower().replace("\u2019", "'").split())


def _article(phrase: str) -> str:
    """ "a" or "an" before `phrase` (by its spelling, the common exceptions aside)."""
    return "an" if phrase[:1] in "aeiou" and not phrase.startswith(NO_AN) else "a"


def lookup(icon: Icon, cldr: dict[str, dict]) -> dict | None:
    """The icon's CLDR annotation: by its emoji, else by its name."""
    if icon.char is not None and icon.char.replace("\ufe0f", "") in cldr:
        return cldr[icon.char.replace("\ufe0f", "")]
    return cldr.get(_clean(icon.name.replace("-", " ")))


# ---- drawing and writing -----------------------------------------------------------------


def rasterise(icon: Icon, size: int) -> Image.Image:
    """The icon drawn at size x size, RGBA; a ValueError when resvg fails or draws nothing.

    Args:
        icon: the icon.
        size: the side in pixels.
    """
    left, top, width, height = icon.box
    svg = SVG.format(left=left, top=top, width=width, height=height, size=size, body=icon.body)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    if image.size != (size, size):
        raise ValueError(f"drawn at {image.size[0]} x {image.size[1]}, not {size} x {size}")
    if image.getchannel("A").getbbox() is None:
        raise ValueError("draws nothing (every pixel transparent)")
    return image


def save_drawing(job: tuple[Icon, int, str]) -> str | None:
    """Draw an icon and save it as a PNG: None, or why it could not be drawn (a Pool's task).

    Args:
        job: the icon, the image side in pixels and the PNG's path.
    """
    icon, size, path = job
    try:
        rasterise(icon, size).save(path)
    except ValueError as err:
        return str(err)
    return None


def write_images(
    icons: list[Icon], cldr: dict[str, dict], out: Path, size: int
) -> tuple[list[dict], dict[str, str]]:
    """Draw and save each icon under out/images; its metadata rows and the skipped ones.

    Args:
        icons: the icons to draw.
        cldr: annotations from `read_cldr`.
        out: the data set folder.
        size: the image side.
    """
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, skipped = [], {}
    for icon in icons:
        file_name = f"images/{icon.name}.png"
        problem = save_drawing((icon, size, str(out / file_name)))
        if problem:
            skipped[icon.name] = problem
            print(f"skipped {icon.name}: {problem}", file=sys.stderr)
            continue
        caption = captions(icon.name, lookup(icon, cldr))
        rows.append({"file_name": file_name, "caption": caption, "name": icon.name})
    return rows, skipped


def clear(out: Path) -> None:
    """Remove what an earlier run wrote into out (for --force): images, metadata, licences."""
    for file in [*out.glob("images/*.png"), *out.glob("licenses/*")]:
        file.unlink()
    for name in ("metadata.jsonl", "LICENSE.md"):
        (out / name).unlink(missing_ok=True)


# ---- licences ----------------------------------------------------------------------------


def licence_section(package: Package, info: dict, role: str) -> list[str]:
    """LICENSE.md lines for one package: name@version, licence, author, source, files.

    Args:
        package: the package.
        info: the icon set's `info` (Iconify: licence title/url, author name/url), or {}.
        role: what the package gives the data set.
    """
    meta = package.meta
    licence = info.get("license", {})
    author = info.get("author", {})
    lines = [f"## {role}: {package.label}", ""]
    if info.get("name"):
        lines.append(f"- set: {info['name']} (prefix `{info.get('prefix', '')}`)")
    lines.append(f"- licence: {licence.get('spdx') or meta.get('license', 'not stated')}")
    if licence.get("url"):
        lines.append(f"- licence text: {licence['url']}")
    who = author.get("name") or meta.get("author")
    if who:
        lines.append(f"- author: {who}" + (f" ({author['url']})" if author.get("url") else ""))
    if meta.get("homepage"):
        lines.append(f"- homepage: {meta['homepage']}")
    files = list(_licence_files(package).values())
    lines.append(f"- licence files: {', '.join(files) if files else 'none in the package'}")
    return [*lines, ""]


def _licence_files(package: Package) -> dict[str, str]:
    """The package's own licence files -> their copies' names under out/licenses/."""
    prefix = package.meta.get("name", package.path.name).lstrip("@").replace("/", "-")
    names = [f for f in package.files if "/" not in f and LICENSE_FILE.match(f)]
    return {f: f"licenses/{prefix}-{f}" for f in names}


def write_licences(
    out: Path, icons: Package, info: dict, cldr: list[Package], command: str
) -> None:
    """out/LICENSE.md and the packages' licence files under out/licenses/.

    Args:
        out: the data set folder.
        icons: the icon package.
        info: the icon set's info (icons.json `info`, else info.json).
        cldr: the CLDR packages.
        command: the command that built the folder.
    """
    lines = ["# Licences and attribution", "", "Images drawn from an Iconify icon set; captions"]
    lines += ["from the icon names and the Unicode CLDR annotations.", ""]
    lines += licence_section(icons, info, "Images")
    for package in cldr:
        lines += licence_section(package, {}, "Captions")
    lines += ["## Built with", "", f"    {command}", ""]
    (out / "LICENSE.md").write_text("\n".join(lines), encoding="utf-8")
    copy_licence_files(out, [icons, *cldr])


def copy_licence_files(out: Path, packages: list[Package]) -> None:
    """The packages' own licence files, copied under out/licenses/.

    Args:
        out: the data set folder.
        packages: the packages it was built from.
    """
    for package in packages:
        for source, copy in _licence_files(package).items():
            (out / "licenses").mkdir(exist_ok=True)
            (out / copy).write_bytes(package.files[source])


# ---- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a one-line argparse error already printed
        return int(done.code or 0)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iconify-") as tmp:
        try:
            icon_package, cldr_packages = load_packages(args, Path(tmp))
        except (RuntimeError, subprocess.TimeoutExpired, tarfile.TarError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    command = shlex.join(["python", "scripts/datasets/iconify_emoji.py", *argv])
    code = build(args, icon_package, cldr_packages, command)
    print(f"({time.perf_counter() - start:.1f} s)")
    return code


def build(args: argparse.Namespace, icons: Package, cldr: list[Package], command: str) -> int:
    """Write the data set folder from the packages; the exit status.

    Args:
        args: the checked command line.
        icons: the icon package.
        cldr: the CLDR packages.
        command: the command line, for LICENSE.md.
    """
    out = Path(args.out)
    data, drawable, left_out = read_icons(icons)
    if args.set and data.get("prefix") != args.set:
        print(
            f"error: --set {args.set}, but {args.source} is {data.get('prefix')}", file=sys.stderr
        )
        return 2
    if args.force:
        clear(out)
    rows, skipped = write_images(drawable[: args.limit], read_cldr(cldr), out, args.size)
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    write_licences(out, icons, data.get("info") or icons.json("info.json") or {}, cldr, command)
    print("left out: " + ", ".join(f"{n} {what}" for what, n in left_out.items()))
    print(f"wrote {len(rows)} images, skipped {len(skipped)} that failed to draw: {out}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

"""Reading users' images the way they expect, and saying clearly when one cannot be read.

`load_image` opens a file (or bytes), refuses decompression bombs, applies the EXIF
orientation and converts every PIL mode to 8-bit RGB: transparency (RGBA, LA, P with a
transparent colour) composited on a background colour, CMYK, 16- and 32-bit greyscale
rescaled to 8 bits, greyscale and palettes expanded. `fit` resizes the shorter side and
crops (centre, or random with a generator) to the model's square size.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_PIXELS = 64_000_000  # larger images are refused as decompression bombs (PIL's limit: 89M)


class BadImageError(ValueError):
    """An image that cannot be used; the message says why."""


def load_image(
    source: str | Path | bytes, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Open and convert an image to RGB, or raise `BadImageError` with the reason.

    Args:
        source: a file path or the file's bytes.
        background: the colour transparent pixels are composited on.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data:
        raise BadImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise BadImageError(f"{w} x {h} pixels: over {MAX_PIXELS:,}, a decompression bomb")
            image.load()
    except BadImageError:
        raise
    except UnidentifiedImageError as err:
        raise BadImageError("not an image PIL can read") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImageError(f"decompression bomb: {err}") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers
        raise BadImageError(f"unreadable image data: {err}") from err
    return to_rgb(ImageOps.exif_transpose(image), background)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency composited on `background`."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def fit(
    image: Image.Image,
    size: int,
    random_crop: bool = False,
    generator: torch.Generator | None = None,
) -> Image.Image:
    """Resize the shorter side to `size` (bicubic) and crop a square: centre, or random.

    Args:
        image: an RGB image.
        size: the output side.
        random_crop: crop at a random offset instead of the centre.
        generator: the randomness of the random crop.
    """
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.BICUBIC)
    if random_crop:
        left = int(torch.randint(0, nw - size + 1, (1,), generator=generator))
        top = int(torch.randint(0, nh - size + 1, (1,), generator=generator))
    else:
        left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))

"""The web demo: `python -m t2i.demo [--model DIR] [--port P]` serves a Gradio page on
127.0.0.1 (the `demo` extra: `pip install 't2i[demo]'`).

A prompt, a negative prompt, the route, the seed, the number of images and each route's
sampling settings (filled with what the pipeline records) go in; a gallery of the images
comes out, each captioned with the settings that drew it, under a progress bar. Image i is
drawn from seed + i, as `python -m t2i.generate` draws it, so the demo and the command line
agree image for image. On the unCLIP route, a picked image's variations.

    python -m t2i.demo                       # http://127.0.0.1:7860: the shipped emoji
                                             # pipeline (the shapes default without it)
    python -m t2i.demo --model default       # the shipped shapes pipeline
    python -m t2i.demo --model runs/emoji64 --port 8080
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

from t2i._version import __version__
from t2i.cli import OneLineParser, check_model, pipeline_path, port, shipped

logger = logging.getLogger("t2i.demo")
SHOWN_FIRST = ("emoji", "default")  # without --model: the first of these that is shipped
SHOWN = 256  # the gallery enlarges each image (nearest-neighbour) to about this many pixels
ROUTE_NAMES = {
    "dalle": "DALL-E",
    "unclip": "unCLIP",
    "ldm": "latent diffusion",
    "maskgit": "masked (MaskGIT)",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    p = OneLineParser(
        prog="python -m t2i.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        help="a saved pipeline directory or a shipped pipeline's name (default: emoji, when "
        "shipped, else default)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="the address to bind (default: this machine only)"
    )
    p.add_argument("--port", type=port, default=7860, help="the port (default 7860)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--version", action="version", version=f"t2i {__version__}")
    return p


MAX_IMAGES = 16  # the page's slider; a call past it would hold the page for minutes


def check_count(seed: Any, num_images: Any) -> None:
    """A ValueError naming a seed below 0 (the command line refuses it, so such an image
    could not be drawn again there) or a number of images outside 1-MAX_IMAGES."""
    if int(seed) < 0:
        raise ValueError(f"seed={seed}: must be a whole number >= 0")
    if not 1 <= int(num_images) <= MAX_IMAGES:
        raise ValueError(f"num_images={num_images}: must be 1 to {MAX_IMAGES}")


class Demo:
    """The demo's work, apart from its page: a saved bundle's routes and the calls the page
    makes (tested without a browser).

    Args:
        model: a saved pipeline directory (None: the shipped default).
        device: "cpu", "cuda" (None: CUDA when present).
    """

    def __init__(self, model: str | Path | None = None, device: str | None = None) -> None:
        import torch

        from t2i.pipelines import CLASSES, ROUTES, check_pipeline_dir

        path = pipeline_path(model)
        if not (path / "model_index.json").is_file() and model is None:
            raise FileNotFoundError(f"{path}: the default pipeline is not in this install")
        cls = CLASSES[check_pipeline_dir(path)["_class_name"]]
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        first = cls.from_pretrained(path, torch_dtype=torch.float32).to(device)
        self.path = path
        if hasattr(first, "routes"):  # a bundle: each route over the same components
            self.pipes = {r: first.route(r) for r in first.routes}
        else:
            self.pipes = {r: first for r, c in ROUTES.items() if isinstance(first, c)}
        for pipe in self.pipes.values():
            pipe.set_progress_bar_config(disable=True)
        self.defaults = dict(first.sampling_defaults)
        self.size = first.image_size

    @property
    def routes(self) -> list[str]:
        return list(self.pipes)

    def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        route: str = "dalle",
        seed: int = 0,
        num_images: int = 4,
        settings: dict[str, Any] | None = None,
        callback: Any = None,
    ) -> list[tuple[Any, str]]:
        """(image, caption) pairs: the route's images for the prompt, image i from seed + i,
        each enlarged for the page and captioned with the settings that drew it.

        Args:
            prompt: the caption.
            negative_prompt: what guidance steers away from ("": none).
            route: a route of the bundle.
            seed: image i is drawn from seed + i.
            num_images: images to draw.
            settings: the route's sampling settings (None or missing: the recorded ones).
            callback: called as f(fraction done) while it samples.

        Raises:
            ValueError: an empty prompt, an unknown route or a setting out of range (named).
        """
        import torch

        from t2i.generate import upscaled

        if not prompt or not prompt.strip():
            raise ValueError("the prompt is empty; type a caption")
        check_count(seed, num_images)
        if route not in self.pipes:
            raise ValueError(f"route {route!r}: this pipeline has {', '.join(self.routes)}")
        pipe = self.pipes[route]
        given = {k: v for k, v in (settings or {}).items() if v is not None}
        seeds = [int(seed) + i for i in range(pipe.draws(int(num_images), given.get("rerank")))]
        steps = _steps(pipe, route, given)

        def step(pipe_: Any, i: int, t: Any, state: dict) -> dict:
            if callback is not None:
                callback(min(1.0, (i + 1) / steps))
            return state

        out = pipe(
            prompt,
            num_images_per_prompt=int(num_images),
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            negative_prompt=negative_prompt or None,
            callback_on_step_end=step,
            **given,
        )
        used = out.settings.as_dict()
        words = ", ".join(f"{k}={v}" for k, v in used.items() if v is not None)
        k = max(1, math.ceil(SHOWN / self.size))
        return [
            (upscaled(image, k), f"seed {seed} image {i} ({ROUTE_NAMES[route]}): {words}")
            for i, image in enumerate(out.images)
        ]

    def variations(self, image: Any, seed: int = 0, num_images: int = 4) -> list[tuple[Any, str]]:
        """(image, caption) pairs: variations of an image through the unCLIP route."""
        import torch
        from PIL import Image

        from t2i.generate import upscaled

        if "unclip" not in self.pipes:
            raise ValueError("variations need the unCLIP route, which this pipeline lacks")
        if image is None:
            raise ValueError("pick an image in the gallery first")
        check_count(seed, num_images)
        if not isinstance(image, Image.Image):
            image = Image.open(image)
        image = image.convert("RGB").resize((self.size, self.size), Image.NEAREST)
        out = self.pipes["unclip"].variations(
            image, num_images=int(num_images), generator=torch.Generator().manual_seed(int(seed))
        )
        k = max(1, math.ceil(SHOWN / self.size))
        return [
            (upscaled(im, k), f"variation {i} (seed {seed})") for i, im in enumerate(out.images)
        ]


def _steps(pipe: Any, route: str, given: dict) -> int:
    """The sampling steps a call reports progress over (codes, or denoising steps)."""
    if route in ("ldm", "maskgit"):  # the steps the call names, else the recorded ones
        recorded = pipe.sampling_defaults[PREFIX[route] + "num_inference_steps"]
        return int(given.get("num_inference_steps") or recorded)
    model = pipe.prior if route == "dalle" else pipe.decoder
    return int(getattr(model, "image_len", 1) or 1)


# ---- the page ------------------------------------------------------------------------------

# the settings each route takes: name -> (label, kind, minimum, maximum)
FIELDS = {
    "dalle": {
        "guidance_scale": ("guidance scale", float, 0.0, 10.0),
        "temperature": ("temperature", float, 0.0, 2.0),
        "top_k": ("top-k (0: off)", int, 0, 512),
        "rerank": ("rerank: candidates CLIP picks from (0: off)", int, 0, 64),
    },
    "unclip": {
        "prior_guidance_scale": ("diffusion prior guidance", float, 0.0, 10.0),
        "num_inference_steps": ("diffusion prior steps", int, 1, 100),
        "prior_candidates": ("prior candidates", int, 1, 8),
        "decoder_guidance_scale": ("decoder guidance", float, 0.0, 10.0),
        "decoder_temperature": ("decoder temperature", float, 0.0, 2.0),
    },
    "ldm": {
        "guidance_scale": ("guidance scale", float, 0.0, 10.0),
        "num_inference_steps": ("denoising steps", int, 1, 100),
    },
    "maskgit": {
        "guidance_scale": ("guidance scale", float, 0.0, 10.0),
        "temperature": ("temperature", float, 0.0, 2.0),
        "num_inference_steps": ("parallel decoding steps", int, 1, 64),
        "rerank": ("rerank: candidates CLIP picks from (0: off)", int, 0, 64),
    },
}
PREFIX = {
    "dalle": "",
    "unclip": "",
    "ldm": "ldm_",
    "maskgit": "maskgit_",
}  # how model_index.json records them


def build_app(demo: Demo) -> Any:
    """The Gradio Blocks page over a `Demo`."""
    import gradio as gr

    def recorded(route: str, name: str) -> Any:
        value = demo.defaults.get(PREFIX[route] + name)
        return 0 if value is None else value

    PROGRESS = gr.Progress()  # noqa: N806 (Gradio fills in the progress bar it reads)
    with gr.Blocks(title="t2i") as app:
        gr.Markdown(f"# t2i\nText to image with `{demo.path.name}` ({demo.size} px).")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="prompt", elem_id="prompt", value="")
                negative = gr.Textbox(label="negative prompt", elem_id="negative")
                route = gr.Radio(
                    choices=[(ROUTE_NAMES[r], r) for r in demo.routes],
                    value=demo.routes[0],
                    label="route",
                    elem_id="route",
                )
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="seed")
                    count = gr.Slider(
                        1, MAX_IMAGES, value=4, step=1, label="images", elem_id="count"
                    )
                boxes: dict[tuple[str, str], Any] = {}
                for r in demo.routes:
                    with gr.Accordion(f"{ROUTE_NAMES[r]} settings", open=False):
                        for name, (label, kind, low, high) in FIELDS[r].items():
                            step = 1 if kind is int else 0.1
                            boxes[(r, name)] = gr.Slider(
                                low, high, value=recorded(r, name), step=step, label=label
                            )
                run = gr.Button("generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                gallery = gr.Gallery(
                    label="images",
                    elem_id="gallery",
                    columns=4,
                    format="png",
                    type="pil",
                    object_fit="contain",
                )
                status = gr.Markdown(elem_id="status")
                picked = gr.State(None)
                with gr.Row(visible="unclip" in demo.routes):
                    vary = gr.Button("variations of the picked image", elem_id="vary")
        keys = list(boxes)

        def on_generate(p, neg, r, s, n, *values, progress=PROGRESS):
            settings = {name: v for (rr, name), v in zip(keys, values, strict=True) if rr == r}
            for name in ("top_k",):
                if settings.get(name) == 0:
                    settings[name] = None
            try:
                images = demo.generate(
                    p, neg, r, int(s or 0), int(n), settings, callback=lambda f: progress(f)
                )
            except ValueError as err:
                raise gr.Error(str(err)) from None
            return images, f"{len(images)} images for {p!r}"

        def on_select(event):
            value = event.value
            return value.get("image", {}).get("path") if isinstance(value, dict) else value

        on_select.__annotations__ = {"event": gr.SelectData}  # how Gradio knows to pass it

        def on_vary(image, s, n):
            try:
                return demo.variations(image, int(s or 0), int(n)), "variations"
            except ValueError as err:
                raise gr.Error(str(err)) from None

        inputs = [prompt, negative, route, seed, count, *boxes.values()]
        run.click(on_generate, inputs, [gallery, status])
        prompt.submit(on_generate, inputs, [gallery, status])
        gallery.select(on_select, None, picked)
        vary.click(on_vary, [picked, seed, count], [gallery, status])
    return app


def main(argv: list[str] | None = None) -> int:
    """The command line: serve the page until interrupted."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        check_model(args.model, pipeline=True)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the web demo needs gradio: pip install 't2i[demo]'", file=sys.stderr)
        return 2
    from t2i.generate import resolve_device

    model = args.model or next((m for m in SHOWN_FIRST if m in shipped()), None)
    try:
        demo = Demo(model, resolve_device(args.device))
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    build_app(demo).queue().launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

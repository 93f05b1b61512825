"""TextToImagePipeline: a saved bundle of every route's components, each loaded once.

The shipped default and a fine-tuned pipeline are saved as a bundle: one CLIP, and the
components of the routes it was built with, any of them alone: the image tokenizer the
routes over codes share, the DALL-E prior, the unCLIP route's diffusion prior and decoder,
the latent route's autoencoder, denoiser and scheduler, and the masked route's prior (a
latent diffusion pipeline, as Stable Diffusion is, holds no tokenizer or prior).
`bundle.route("dalle")` / `bundle.route("maskgit")` is that route's pipeline over the
same components (`from_pipe`: nothing loaded twice); `t2i.load_pipeline(path, route=...)`
loads a bundle and returns the route.
"""

from __future__ import annotations

from typing import Any, ClassVar

from diffusers import SchedulerMixin

from t2i.models import (
    CLIPModel,
    DALLEPrior,
    DiffusionDecoder,
    DiffusionPrior,
    ImageTokenizer,
    LatentAutoencoder,
    LatentDenoiser,
    MaskGITPrior,
)
from t2i.pipelines.common import T2IPipeline
from t2i.pipelines.dalle import DALLEPipeline, DALLESampling, check_prior
from t2i.pipelines.ldm import LatentDiffusionPipeline, LDMSampling, check_denoiser
from t2i.pipelines.maskgit import MaskGITPipeline, MaskGITSampling, check_masked_prior
from t2i.pipelines.unclip import UnCLIPPipeline, UnCLIPSampling, check_decoder

ROUTES: dict[str, type[T2IPipeline]] = {
    "dalle": DALLEPipeline,
    "unclip": UnCLIPPipeline,
    "ldm": LatentDiffusionPipeline,
    "maskgit": MaskGITPipeline,
}
NAMES = {"dalle": "DALL-E", "unclip": "unCLIP", "ldm": "latent diffusion", "maskgit": "masked"}
OWN = {  # the components each route holds alone, beyond the shared CLIP (all or none)
    "dalle": ("prior",),
    "unclip": ("diffusion_prior", "decoder"),
    "ldm": ("vae", "unet", "scheduler"),
    "maskgit": ("masked_prior",),
}
SHARED = {
    "dalle": ("image_tokenizer",),
    "unclip": ("image_tokenizer",),
    "maskgit": ("image_tokenizer",),
}
NEEDS = {r: (*SHARED.get(r, ()), *own) for r, own in OWN.items()}  # beyond CLIP


def missing_route(name: str, lacking: list[str], routes: list[str]) -> ValueError:
    """The error for a route asked of a pipeline that lacks its components."""
    have = ", ".join(NAMES[r] for r in routes if r in NAMES)
    return ValueError(
        f"route={name!r} needs a pipeline with a {' and a '.join(lacking)}; this one has the "
        f"{have} route{' only' if len(routes) == 1 else 's'}"
    )


def check_routes(parts: dict[str, Any]) -> None:
    """A ValueError unless the given components make whole routes, one at least: each route's
    own components all or none, and with them the shared ones they draw through."""
    for route, names in OWN.items():
        given = [n for n in names if parts[n] is not None]
        if given and len(given) != len(names):
            needs = " and ".join(f"a {n}" for n in names)
            raise ValueError(
                f"the {NAMES[route]} route needs {'both' if len(names) == 2 else 'all of'} "
                f"{needs}, or none of them"
            )
        lacking = [n for n in SHARED.get(route, ()) if given and parts[n] is None]
        if lacking:
            raise ValueError(f"the {NAMES[route]} route draws through a {lacking[0]}: give one")
    if not any(parts[names[0]] is not None for names in OWN.values()):
        raise ValueError(
            "a pipeline needs one route at least: a prior (DALL-E), a diffusion prior and "
            "decoder (unCLIP), a vae, unet and scheduler (latent diffusion) or a masked prior"
        )


class TextToImagePipeline(T2IPipeline):
    """The components of every route a pipeline carries (see the module docstring).

    Args:
        clip: the CLIP model (shared by the routes).
        image_tokenizer: the image tokenizer (shared by the routes over codes: DALL-E, unCLIP,
            masked; None for a pipeline of the latent diffusion route alone).
        prior: the DALL-E route's `DALLEPrior`.
        diffusion_prior: the unCLIP route's `DiffusionPrior` (with `decoder`, or neither).
        decoder: the unCLIP route's decoder.
        vae: the latent diffusion route's autoencoder (with `unet` and `scheduler`).
        unet: its `LatentDenoiser`.
        scheduler: its diffusers scheduler.
        masked_prior: the masked route's `MaskGITPrior` (over the tokenizer's codes).
    """

    _optional_components: ClassVar[list[str]] = [
        "image_tokenizer",
        "prior",
        "diffusion_prior",
        "decoder",
        "vae",
        "unet",
        "scheduler",
        "masked_prior",
    ]
    settings_classes = (DALLESampling, UnCLIPSampling, LDMSampling, MaskGITSampling)

    def __init__(
        self,
        clip: CLIPModel,
        image_tokenizer: ImageTokenizer | None = None,
        prior: DALLEPrior | None = None,
        diffusion_prior: DiffusionPrior | None = None,
        decoder: DALLEPrior | DiffusionDecoder | None = None,
        vae: LatentAutoencoder | None = None,
        unet: LatentDenoiser | None = None,
        scheduler: SchedulerMixin | None = None,
        masked_prior: MaskGITPrior | None = None,
    ):
        super().__init__()
        parts = dict(
            image_tokenizer=image_tokenizer,
            prior=prior,
            diffusion_prior=diffusion_prior,
            decoder=decoder,
            vae=vae,
            unet=unet,
            scheduler=scheduler,
            masked_prior=masked_prior,
        )
        check_routes(parts)
        if prior is not None:
            check_prior(prior)
        if decoder is not None:
            check_decoder(decoder)
        if unet is not None:
            check_denoiser(unet)
        if masked_prior is not None:
            check_masked_prior(masked_prior)
        self.register_modules(clip=clip, **parts)
        self._init_defaults()

    @property
    def routes(self) -> list[str]:
        """The routes this bundle holds the components of."""
        return [r for r, names in NEEDS.items() if all(getattr(self, n) is not None for n in names)]

    def route(self, name: str) -> T2IPipeline:
        """The route's pipeline over this bundle's components (shared, not reloaded).

        Args:
            name: "dalle", "unclip", "ldm" or "maskgit".
        """
        if name not in ROUTES:
            raise ValueError(f"route={name!r}: use one of {tuple(ROUTES)}")
        if name not in self.routes:
            lacking = [n for n in NEEDS[name] if getattr(self, n) is None]
            raise missing_route(name, lacking, self.routes)
        return ROUTES[name].from_pipe(self)

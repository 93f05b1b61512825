"""TextToImagePipeline: a saved bundle of every route's components, each loaded once.

The shipped default and a fine-tuned pipeline are saved as a bundle: one CLIP and one image
tokenizer, the DALL-E prior, and the unCLIP route's diffusion prior and decoder when it has
them. `bundle.route("dalle")` / `bundle.route("unclip")` is that route's pipeline over the
same components (`from_pipe`: nothing loaded twice); `t2i.load_pipeline(path, route=...)`
loads a bundle and returns the route.
"""

from __future__ import annotations

from typing import ClassVar

from t2i.models import CLIPModel, DALLEPrior, DiffusionDecoder, DiffusionPrior, ImageTokenizer
from t2i.pipelines.common import T2IPipeline
from t2i.pipelines.dalle import DALLEPipeline, DALLESampling, check_prior
from t2i.pipelines.unclip import UnCLIPPipeline, UnCLIPSampling, check_decoder

ROUTES: dict[str, type[T2IPipeline]] = {"dalle": DALLEPipeline, "unclip": UnCLIPPipeline}


class TextToImagePipeline(T2IPipeline):
    """The components of every route a pipeline carries (see the module docstring).

    Args:
        clip: the CLIP model (shared by the routes).
        image_tokenizer: the image tokenizer (shared by the routes).
        prior: the DALL-E route's `DALLEPrior`.
        diffusion_prior: the unCLIP route's `DiffusionPrior` (with `decoder`, or neither).
        decoder: the unCLIP route's decoder.
    """

    _optional_components: ClassVar[list[str]] = ["diffusion_prior", "decoder"]
    settings_classes = (DALLESampling, UnCLIPSampling)

    def __init__(
        self,
        clip: CLIPModel,
        image_tokenizer: ImageTokenizer,
        prior: DALLEPrior,
        diffusion_prior: DiffusionPrior | None = None,
        decoder: DALLEPrior | DiffusionDecoder | None = None,
    ):
        super().__init__()
        if (diffusion_prior is None) != (decoder is None):
            raise ValueError("the unCLIP route needs both a diffusion_prior and a decoder")
        check_prior(prior)
        if decoder is not None:
            check_decoder(decoder)
        self.register_modules(
            clip=clip,
            image_tokenizer=image_tokenizer,
            prior=prior,
            diffusion_prior=diffusion_prior,
            decoder=decoder,
        )
        self._init_defaults()

    @property
    def routes(self) -> list[str]:
        """The routes this bundle holds the components of."""
        return ["dalle", *(["unclip"] if self.decoder is not None else [])]

    def route(self, name: str) -> T2IPipeline:
        """The route's pipeline over this bundle's components (shared, not reloaded).

        Args:
            name: "dalle" or "unclip".
        """
        if name not in ROUTES:
            raise ValueError(f"route={name!r}: use one of {tuple(ROUTES)}")
        if name not in self.routes:
            raise ValueError(
                f"route={name!r} needs a pipeline with a diffusion_prior and a decoder; this "
                "one has the DALL-E route only"
            )
        return ROUTES[name].from_pipe(self)

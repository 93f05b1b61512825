"""Model families by name: `MODELS[name]` is the class a training config's `model.type` picks."""

from t2i.models.cvae import CVAE
from t2i.models.gumbel import CategoricalVAE
from t2i.models.vae import VAE

MODELS: dict[str, type] = {
    "vae": VAE,  # beta-VAE: VAE with beta != 1
    "cvae": CVAE,
    "categorical_vae": CategoricalVAE,
}

__all__ = ["CVAE", "MODELS", "VAE", "CategoricalVAE"]

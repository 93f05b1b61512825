"""t2i: text-conditioned image generation in the DALL-E family, trained by one Accelerate loop.

Submodules: `t2i.models` (VAE, beta-VAE, CVAE, Gumbel-softmax ...), `t2i.data` (the shapes
world), `t2i.evaluation` (the shapes judge), `t2i.training` (the trainer), `t2i.config`.
Command lines: `python -m t2i.train`, `python -m t2i.evaluate`, `python -m t2i.data.shapes`.
"""

__version__ = "0.1.0"

"""ldm: latent diffusion for MNIST (classifier for FID, VAE, latent diffusion UNet).

    from ldm import LatentDiffusion, save_grid
    pipe = LatentDiffusion.from_pretrained("checkpoints")
    save_grid(pipe(num_images=16, digit=7, seed=0), "sevens.png")
"""

from .images import save_grid
from .pipeline import LatentDiffusion
from .prompt import Prompt
from .version import __version__

__all__ = ["LatentDiffusion", "Prompt", "save_grid", "__version__"]

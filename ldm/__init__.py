"""ldm: latent diffusion for MNIST (classifier for FID, VAE, latent diffusion UNet).

    from ldm import LatentDiffusion, save_grid
    pipe = LatentDiffusion.from_pretrained("checkpoints")
    save_grid(pipe(num_images=16, digit=7, seed=0), "sevens.png")
"""

__version__ = "0.1.0"

from .images import save_grid  # noqa: E402  (after __version__, which the modules import)
from .pipeline import LatentDiffusion  # noqa: E402
from .prompt import Prompt  # noqa: E402

__all__ = ["LatentDiffusion", "Prompt", "save_grid", "__version__"]

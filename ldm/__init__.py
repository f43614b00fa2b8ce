"""ldm: latent diffusion for MNIST (classifier for FID, VAE, latent DDPM)."""

__version__ = "0.1.0"

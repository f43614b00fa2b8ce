"""Convolutional VAE: 1x28x28 images <-> a spatial latent of latent_channels x 7 x 7."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import IMAGE_SIZE
from .errors import check_positive
from .nn import ResBlock, normalization

LATENT_SIZE = IMAGE_SIZE // 4  # two stride-2 convolutions take 28x28 to 7x7


@dataclass
class VAEConfig:
    latent_channels: int = 4  # 4x7x7 = 196 latent dims, a 4x compression of 784 pixels
    channels: tuple[int, int] = (32, 64)  # widths at 28x28 / 14x14 and at 7x7 (most compute sits at 28 and 14)
    beta: float = 0.1  # KL weight; below 1 for sharper reconstructions, the diffusion models the rest

    def __post_init__(self):
        check_positive(latent_channels=self.latent_channels, channels=self.channels, beta=self.beta)


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        c1, c2 = config.channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c1, 4, stride=2, padding=1), ResBlock(c1, c1),  # 28 -> 14
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), ResBlock(c2, c2),  # 14 -> 7
            normalization(c2), nn.SiLU(), nn.Conv2d(c2, 2 * config.latent_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        c1, c2 = config.channels
        self.net = nn.Sequential(
            nn.Conv2d(config.latent_channels, c2, 3, padding=1), ResBlock(c2, c2),
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1), ResBlock(c1, c1),  # 7 -> 14
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(c1, c1, 3, padding=1),  # 14 -> 28
            normalization(c1), nn.SiLU(), nn.Conv2d(c1, 1, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VAE(nn.Module):
    kind = "vae"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """C x H x W of a latent."""
        return (self.config.latent_channels, LATENT_SIZE, LATENT_SIZE)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N x 1 x 28 x 28] in [0, 1] -> (mean, logvar), each [N x latent_channels x 7 x 7]."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Images -> (decoder logits of z = μ + σ·ε, mean, logvar): the reparameterisation trick,
        with ε ~ N(0, I) drawn here unless given (training passes the global batch's share)."""
        mean, logvar = self.encode(x)
        return self.decoder(reparameterise(mean, logvar, noise)), mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (the Bernoulli means)."""
        return torch.sigmoid(self.decoder(z))


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z = μ + σ·ε, a draw from the posterior N(μ, σ²) (eq. 10 of Kingma & Welling 2013,
    arXiv:1312.6114); ε ~ N(0, I) drawn here, on μ's device, unless given."""
    noise = torch.randn_like(mean) if noise is None else noise
    return mean + torch.exp(0.5 * logvar) * noise


def vae_loss(vae: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, ...]], x: torch.Tensor,
             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image negative ELBO terms, averaged over the batch: (reconstruction BCE, KL).

    `vae` is a VAE or its DistributedDataParallel wrapper (anything called like `VAE.forward`).
    The total loss is recon + beta * KL; both are sums over pixels / latent dims, in nats.
    """
    return elbo_terms(x, *vae(x, noise))


def elbo_terms(x: torch.Tensor, logits: torch.Tensor, mean: torch.Tensor,
               logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`vae_loss` from a forward pass already made: the Bernoulli negative log-likelihood of `x`
    under the decoder's logits and KL(N(μ, σ²) || N(0, I)), each summed per image and averaged."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum() / len(x)
    return recon, kl

"""Layers shared by the models: time and label embeddings (UNet, toy MLP), residual blocks and
resampling (VAE, UNet)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in "Attention Is All You Need".

    :param timesteps: [N] tensor of timesteps.
    :param dim: embedding width (even).
    :return: [N x dim] tensor, cosines then sines.
    """
    half = dim // 2
    # Frequencies exp(-log(max_period) * i / half) are computed in log space for precision.
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Sequential):
    """timestep_embedding(t, freq_dim) followed by Linear-SiLU-Linear: [N] -> [N x dim].
    One definition for every denoiser (the UNet, the toy MLP)."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.freq_dim = freq_dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return super().forward(timestep_embedding(t, self.freq_dim))


class LabelEmbedding(nn.Module):
    """Embedding of labels 0..num_classes-1 plus index `num_classes` for "no label" (the entry that
    classifier-free guidance trains by dropping labels, see guidance.py)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """:param labels: [N] ints, None for N unlabelled examples, or float weights [N x
        (num_classes + 1)] of a mix of entries (interpolating between digits). :return: [N x dim]."""
        if labels is None:
            labels = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=self.embed.weight.device)
        if labels.is_floating_point():  # summed in fp32 even under autocast: one-hot weights give the entry exactly
            return (labels.float().unsqueeze(-1) * self.embed.weight.float()).sum(dim=1)
        return self.embed(labels)


def normalization(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip; an optional embedding is added between the convs."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(normalization(in_channels), nn.SiLU(),
                                       nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels)) if emb_dim else None
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.in_layers(x)
        if self.emb_proj is not None:
            h = h + self.emb_proj(emb)[:, :, None, None]  # (B, C, 1, 1) broadcast over space
        return self.skip(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Strided 3x3 conv: 7x7 -> 4x4, 14x14 -> 7x7 (odd sizes round up)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to a given size (so 4x4 can go back to 7x7), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="nearest")
        return self.conv(x)

"""A time-conditioned MLP that predicts ε for D-dimensional vectors: the toy counterpart of the
UNet, with the same time embedding and the same optional label embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..nn import LabelEmbedding, TimeEmbedding, zero_module


@dataclass
class MLPConfig:
    dim: int = 2  # data dimension
    hidden: int = 128  # width of every layer; also the time embedding's frequency count
    num_blocks: int = 3  # residual blocks
    num_classes: int = 0  # > 0: a label embedding (plus a "no label" entry) is added to the time embedding


class MLPBlock(nn.Module):
    """Pre-norm residual block; the embedding is added between its two layers, as in ResBlock."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(width, width))
        self.fc2 = zero_module(nn.Linear(width, width))  # the block starts as the identity

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.nn.functional.silu(self.fc1(self.norm(h)) + self.emb_proj(emb)))


class MLPDenoiser(nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        width = config.hidden
        self.time_embed = TimeEmbedding(width, width)
        self.label_embed = LabelEmbedding(config.num_classes, width) if config.num_classes else None
        self.input = nn.Linear(config.dim, width)
        self.blocks = nn.ModuleList([MLPBlock(width) for _ in range(config.num_blocks)])
        self.output = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, config.dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """:param x: [N x dim] noisy vectors. :param t: [N] timesteps. :param labels: [N] or None.
        :return: [N x dim] predicted ε (or v)."""
        emb = self.time_embed(t)
        if self.label_embed is not None:
            emb = emb + self.label_embed(labels, len(x))
        h = self.input(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(h)

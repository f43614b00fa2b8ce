"""Time-conditioned UNet that predicts the noise ε in a latent of shape C x H x W, optionally
conditioned on a class label (for classifier-free guidance, see guidance.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError, check_fraction, check_positive
from .nn import Downsample, LabelEmbedding, ResBlock, TimeEmbedding, Upsample, normalization, zero_module


@dataclass
class UNetConfig:
    in_channels: int = 4  # the latents' channels: stages.train_unet sets it from the latent cache
    base_channels: int = 64  # width at the input resolution
    channel_mult: tuple[int, ...] = (1, 2)  # one level per entry: 7x7, then 4x4
    num_res_blocks: int = 2  # per level on the way down (one more on the way up)
    dropout: float = 0.0
    num_classes: int = 0  # > 0: a label embedding (plus a "no label" entry) is added to the time embedding

    def __post_init__(self):
        if not self.channel_mult:
            raise ConfigError("channel_mult", self.channel_mult, "needs at least one level")
        check_positive(in_channels=self.in_channels, base_channels=self.base_channels,
                       channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks)
        check_fraction("dropout", self.dropout)
        if self.num_classes < 0:
            raise ConfigError("num_classes", self.num_classes, "must be >= 0 (0: unconditional)")


class UNet(nn.Module):
    kind = "unet"
    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch = config.base_channels
        emb_dim = 4 * ch
        self.time_embed = TimeEmbedding(ch, emb_dim)
        self.label_embed = LabelEmbedding(config.num_classes, emb_dim) if config.num_classes else None
        self.input_conv = nn.Conv2d(config.in_channels, ch, 3, padding=1)

        # Down path: every block's output is kept as a skip for the up path.
        self.down_blocks, self.downsamples = nn.ModuleList(), nn.ModuleList()
        skip_channels = [ch]
        for level, mult in enumerate(config.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(ch, mult * config.base_channels, emb_dim, config.dropout))
                ch = mult * config.base_channels
                skip_channels.append(ch)
            self.down_blocks.append(blocks)
            last = level == len(config.channel_mult) - 1
            self.downsamples.append(nn.Identity() if last else Downsample(ch))
            if not last:
                skip_channels.append(ch)

        self.mid_blocks = nn.ModuleList([ResBlock(ch, ch, emb_dim, config.dropout) for _ in range(2)])

        # Up path: num_res_blocks + 1 blocks per level, each eating one skip (concatenated).
        self.up_blocks, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResBlock(ch + skip_channels.pop(), mult * config.base_channels, emb_dim, config.dropout))
                ch = mult * config.base_channels
            self.up_blocks.append(blocks)
            self.upsamples.append(Upsample(ch) if level > 0 else nn.Identity())

        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, config.in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """:param x: [N x C x H x W] noisy latents. :param t: [N] timesteps.
        :param labels: [N] class labels (num_classes for "no label"), mixes of them (nn.LabelEmbedding),
            or None; ignored when the model is unconditional. :return: ε̂, like x."""
        # 1. time (and label)
        emb = self.time_embed(t)
        if self.label_embed is not None:
            emb = emb + self.label_embed(labels, len(x))
        # 2. pre-process
        h = self.input_conv(x)
        skips = [h]
        # 3. down
        for blocks, down in zip(self.down_blocks, self.downsamples):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        # 4. mid
        for block in self.mid_blocks:
            h = block(h, emb)
        # 5. up
        for blocks, up in zip(self.up_blocks, self.upsamples):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)  # (B, C + C_skip, H, W)
            if not isinstance(up, nn.Identity):
                h = up(h, size=skips[-1].shape[-2:])  # back to the skip's size, e.g. 4x4 -> 7x7
        # 6. post-process
        return self.out(h)

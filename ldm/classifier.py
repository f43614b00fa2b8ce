"""Small MNIST CNN; its 128-d penultimate activations are the feature space of the Fréchet distance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import NUM_CLASSES
from .errors import check_fraction, check_positive

# Mean and std of MNIST training pixels in [0, 1]; normalising inside the model keeps callers simple.
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


@dataclass
class ClassifierConfig:
    channels: tuple[int, int] = (32, 64)  # two conv stages, 28x28 then 14x14
    feature_dim: int = 128  # width of the penultimate layer used for FID
    dropout: float = 0.3  # before the last layer only; 24k images overfit without it

    def __post_init__(self):
        check_positive(channels=self.channels, feature_dim=self.feature_dim)
        check_fraction("dropout", self.dropout)


class Classifier(nn.Module):
    kind = "classifier"
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
        )
        self.fc = nn.Linear(c2 * 7 * 7, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N x 1 x 28 x 28] images in [0, 1] -> [N x feature_dim] penultimate activations."""
        h = self.conv((x - PIXEL_MEAN) / PIXEL_STD)
        return F.relu(self.fc(h.flatten(1)))

    def dropout_mask(self, n: int, device: torch.device) -> torch.Tensor:
        """[n x feature_dim] dropout mask, 0 or 1/(1 - p): what F.dropout multiplies by on the CPU,
        drawn the same way, so that training can draw the global batch's masks and keep a shard."""
        p = self.config.dropout
        return torch.empty(n, self.config.feature_dim, device=device).bernoulli_(1 - p).div_(1 - p)

    def forward(self, x: torch.Tensor, dropout_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> [N x 10] logits; in training with dropout on the features, by `dropout_mask`
        when given (training draws the global batch's), else by one drawn here."""
        features = self.features(x)
        if dropout_mask is None and self.training:
            dropout_mask = self.dropout_mask(len(x), x.device)
        return self.head(features if dropout_mask is None else features * dropout_mask)

"""Diffusion on toy vectors with the pipeline's own code: the diffusion process and its loss
(diffusion.py), the training set-up, step loop and EMA (diffusion_training.py, train.py), the samplers
(sampling.py) and classifier-free guidance (guidance.py). Only the network (an MLP) and the data
differ from the latent model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion import Diffusion, DiffusionConfig
from ..diffusion_training import train_denoiser
from ..monitor import Monitor
from ..runtime import RunContext
from ..sampling import SamplerConfig
from ..train import TrainSettings
from .data import ToyDataset
from .distance import sliced_wasserstein
from .mlp import MLPConfig, MLPDenoiser

# The objective of Ho et al. 2020 (linear β, ε-prediction): on standardised vectors it needs
# none of the latent model's remedies, and it keeps the toy a test of the original recipe.
TOY_DIFFUSION = DiffusionConfig(schedule="linear", prediction="eps", label_dropout=0.1)


@dataclass(frozen=True)
class ToySettings:
    train_points: int  # size of the fixed training set
    training: TrainSettings
    hidden: int
    num_blocks: int
    diffusion: DiffusionConfig = TOY_DIFFUSION


TOY_SETTINGS = {
    "full": ToySettings(train_points=50_000, training=TrainSettings(steps=6000, batch_size=512, lr=2e-3,
                                                                    warmup_steps=200), hidden=128, num_blocks=3),
    "fast": ToySettings(train_points=20_000, training=TrainSettings(steps=1500, batch_size=256, lr=3e-3,
                                                                    warmup_steps=100), hidden=64, num_blocks=2),
}

# The samplers compared on every toy; prompts use the first
TOY_SAMPLERS = (SamplerConfig("ddpm"), SamplerConfig("ddim", 50), SamplerConfig("langevin", 100))


@dataclass
class ToyDiffusion:
    """A trained MLP denoiser with its diffusion process and the training data's standardisation."""
    model: MLPDenoiser  # EMA weights
    diffusion: Diffusion
    mean: torch.Tensor  # [dim], raw units
    std: torch.Tensor  # [dim]
    train_seconds: float

    @torch.no_grad()
    def sample(self, n: int, sampler: SamplerConfig = SamplerConfig("ddpm"), *, labels: torch.Tensor | None = None,
               guidance: float = 1.0, seed: int = 0) -> np.ndarray:
        """n points [n x dim] in raw units. labels: [n] condition indices (a conditional model
        only), mixed with "no label" by classifier-free guidance of scale `guidance`."""
        x = self.diffusion.sample(self.model, (n, self.model.config.dim), sampler, labels=labels, guidance=guidance,
                                  num_classes=self.model.config.num_classes,
                                  generator=torch.Generator().manual_seed(seed))
        return (x * self.std + self.mean).double().numpy()


def train_toy(dataset: ToyDataset, settings: ToySettings, *, conditional: bool = False, seed: int = 0,
              progress: bool = False, monitor: Monitor | None = None) -> ToyDiffusion:
    """Train on `settings.train_points` points of `dataset` drawn with `seed`, on the CPU (the
    MLP is too small to gain from a GPU). conditional: learn the data set's labels too. The
    `monitor` logs the training loss."""
    points, labels = dataset.sample(settings.train_points, seed)
    x = torch.from_numpy(points).float()
    mean, std = x.mean(0), x.std(0)
    x = (x - mean) / std
    labels = torch.from_numpy(labels)
    config = MLPConfig(dim=dataset.dim, hidden=settings.hidden, num_blocks=settings.num_blocks,
                       num_classes=len(dataset.label_names) if conditional else 0)
    diffusion = Diffusion(settings.diffusion)
    trained = train_denoiser(lambda: MLPDenoiser(config), diffusion, len(x), lambda index: (x[index], labels[index]),
                             settings.training, RunContext(seed, torch.device("cpu"), progress),
                             desc=f"toy {dataset.name}", monitor=monitor)
    return ToyDiffusion(trained.ema_model, diffusion, mean, std, trained.seconds)


def gaussian_like(points: np.ndarray, seed: int) -> np.ndarray:
    """Gaussian noise with the mean and covariance of `points` [N x D]: the baseline a model must beat."""
    rng = np.random.default_rng(seed)
    cov = np.atleast_2d(np.cov(points, rowvar=False))
    return rng.multivariate_normal(points.mean(0), cov, size=len(points))


def evaluate_toy(model: ToyDiffusion, dataset: ToyDataset, num_samples: int, seed: int,
                 ) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """Distances to fresh data (sliced W1, raw units) of each sampler's output, of a second fresh
    draw (the floor at this sample size) and of `gaussian_like` noise; with a conditional model,
    also the fraction of each prompt's samples below zero. Returns (row, the fresh data, samples by name)."""
    fresh = dataset.sample(num_samples, seed + 1)[0]
    row = {"data": dataset.name, "train_seconds": model.train_seconds,
           "floor": sliced_wasserstein(dataset.sample(num_samples, seed + 2)[0], fresh),
           "gaussian": sliced_wasserstein(gaussian_like(fresh, seed + 3), fresh), "samplers": {}}
    samples = {}
    for sampler in TOY_SAMPLERS:
        start = time.time()
        name = sampler.label
        samples[name] = model.sample(num_samples, sampler, seed=seed)
        row["samplers"][name] = {"distance": sliced_wasserstein(samples[name], fresh),
                                 "seconds": time.time() - start}
    if model.model.config.num_classes:
        row["prompts"] = {}
        for index, label in enumerate(dataset.label_names):
            name = f"'{label}', {TOY_SAMPLERS[0].label}"
            samples[name] = model.sample(num_samples, TOY_SAMPLERS[0], seed=seed,
                                         labels=torch.full((num_samples,), index))
            row["prompts"][label] = {"below_zero": float((samples[name] < 0).mean())}
    return row, fresh, samples


def toy_markdown(rows: list[dict]) -> str:
    """The distances of `evaluate_toy` rows as a table, then the prompts."""
    names = [sampler.label for sampler in TOY_SAMPLERS]
    lines = ["| data | train s | floor (fresh data) | Gaussian | " + " | ".join(names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for r in rows:
        cells = [f"{r['samplers'][n]['distance']:.4f} ({r['samplers'][n]['seconds']:.1f} s)" for n in names]
        lines.append(f"| {r['data']} | {r['train_seconds']:.0f} | {r['floor']:.4f} | {r['gaussian']:.4f} | "
                     + " | ".join(cells) + " |")
    for r in rows:
        for label, p in r.get("prompts", {}).items():
            lines.append(f"\n{r['data']}, prompt '{label}' ({TOY_SAMPLERS[0].label}, guidance 1): "
                         f"{p['below_zero']:.1%} of samples below zero")
    return "\n".join(lines) + "\n"

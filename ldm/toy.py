"""Diffusion on toy vectors with the pipeline's own code: the loss (objective.py), the step loop
and EMA (train.py), the samplers (sampling.py) and classifier-free guidance (guidance.py). Only
the network (an MLP) and the data differ from the latent model."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .data import BatchSampler
from .diffusion import as_eps_model
from .guidance import guided_model
from .mlp import MLPConfig, MLPDenoiser
from .objective import DiffusionObjective, diffusion_step_loss
from .schedule import NoiseSchedule
from .sampling import run_sampler
from .toy_data import ToyDataset
from .train import EMA, TrainSettings, run_training
from .two_sample import sliced_wasserstein


@dataclass(frozen=True)
class ToySettings:
    train_points: int  # size of the fixed training set
    training: TrainSettings
    hidden: int
    num_blocks: int


TOY_SETTINGS = {
    "full": ToySettings(train_points=50_000, training=TrainSettings(steps=6000, batch_size=512, lr=2e-3,
                                                                    warmup_steps=200), hidden=128, num_blocks=3),
    "fast": ToySettings(train_points=20_000, training=TrainSettings(steps=1500, batch_size=256, lr=3e-3,
                                                                    warmup_steps=100), hidden=64, num_blocks=2),
}


@dataclass
class ToyDiffusion:
    """A trained MLP denoiser with its schedule and the training data's standardisation."""
    model: MLPDenoiser  # EMA weights
    schedule: NoiseSchedule
    objective: DiffusionObjective
    mean: torch.Tensor  # [dim], raw units
    std: torch.Tensor  # [dim]
    train_seconds: float

    @torch.no_grad()
    def sample(self, n: int, *, sampler: str = "ddpm", steps: int | None = None, labels: torch.Tensor | None = None,
               guidance: float = 1.0, seed: int = 0, **sampler_args) -> np.ndarray:
        """n points [n x dim] in raw units. labels: [n] condition indices (a conditional model
        only), mixed with "no label" by classifier-free guidance of scale `guidance`."""
        eps_model = as_eps_model(guided_model(self.model, labels, guidance, self.model.config.num_classes),
                                 self.schedule, self.objective.prediction)
        x = run_sampler(sampler, eps_model, self.schedule, (n, self.model.config.dim), steps=steps,
                        generator=torch.Generator().manual_seed(seed), **sampler_args)
        return (x * self.std + self.mean).double().numpy()


def train_toy(dataset: ToyDataset, settings: ToySettings, *, objective: DiffusionObjective = DiffusionObjective(),
              conditional: bool = False, seed: int = 0, progress: bool = False) -> ToyDiffusion:
    """Train on `settings.train_points` points of `dataset` drawn with `seed`, on the CPU (the
    MLP is too small to gain from a GPU). conditional: learn the data set's labels too."""
    points, labels = dataset.sample(settings.train_points, seed)
    x = torch.from_numpy(points).float()
    mean, std = x.mean(0), x.std(0)
    x = (x - mean) / std
    labels = torch.from_numpy(labels)
    torch.manual_seed(seed)
    num_classes = len(dataset.label_names) if conditional else 0
    model = MLPDenoiser(MLPConfig(dim=dataset.dim, hidden=settings.hidden, num_blocks=settings.num_blocks,
                                  num_classes=num_classes))
    ema = EMA(model)
    sampler = BatchSampler(len(x), settings.training.batch_size, seed)
    schedule = objective.noise_schedule()

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        index = sampler.next()
        return x[index], labels[index]

    start = time.time()
    run_training(model, diffusion_step_loss(model, objective, schedule, next_batch, num_classes, torch.device("cpu")),
                 steps=settings.training.steps, lr=settings.training.lr, warmup_steps=settings.training.warmup_steps,
                 ema=ema, desc=f"toy {dataset.name}", progress=progress)
    return ToyDiffusion(ema.model, schedule, objective, mean, std, time.time() - start)


# The samplers compared on every toy: name -> arguments of ToyDiffusion.sample
TOY_SAMPLERS = {"DDPM-1000": dict(sampler="ddpm"), "DDIM-50": dict(sampler="ddim", steps=50),
                "Langevin-100": dict(sampler="langevin", steps=100)}


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
    for name, args in TOY_SAMPLERS.items():
        start = time.time()
        samples[name] = model.sample(num_samples, seed=seed, **args)
        row["samplers"][name] = {"distance": sliced_wasserstein(samples[name], fresh),
                                 "seconds": time.time() - start}
    if model.model.config.num_classes:
        row["prompts"] = {}
        for index, label in enumerate(dataset.label_names):
            name = f"'{label}', DDPM-1000"
            samples[name] = model.sample(num_samples, seed=seed, labels=torch.full((num_samples,), index))
            row["prompts"][label] = {"below_zero": float((samples[name] < 0).mean())}
    return row, fresh, samples


def toy_markdown(rows: list[dict]) -> str:
    """The distances of `evaluate_toy` rows as a table, then the prompts."""
    names = list(TOY_SAMPLERS)
    lines = ["| data | train s | floor (fresh data) | Gaussian | " + " | ".join(names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for r in rows:
        cells = [f"{r['samplers'][n]['distance']:.4f} ({r['samplers'][n]['seconds']:.1f} s)" for n in names]
        lines.append(f"| {r['data']} | {r['train_seconds']:.0f} | {r['floor']:.4f} | {r['gaussian']:.4f} | "
                     + " | ".join(cells) + " |")
    for r in rows:
        for label, p in r.get("prompts", {}).items():
            lines.append(f"\n{r['data']}, prompt '{label}' (DDPM-1000, guidance 1): "
                         f"{p['below_zero']:.1%} of samples below zero")
    return "\n".join(lines) + "\n"

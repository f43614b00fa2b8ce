"""The pipeline's diffusion code on toy vectors (ldm/toy/): each trained model's samples must be
close to fresh data in 1-Wasserstein distance, under a bound that Gaussian noise with the data's
mean and covariance fails, and the prompted mixture must land on the requested side of zero.
Fast settings (small MLP, 1,500 steps); `make toy` runs the full ones."""

import numpy as np
import pytest
import torch

from ldm.errors import LdmError
from ldm.sampling import SamplerConfig
from ldm.toy.data import TOY_DATASETS, get_toy_dataset
from ldm.toy.distance import sliced_wasserstein
from ldm.toy.run import TOY_SETTINGS, ToyDiffusion, gaussian_like, train_toy

pytestmark = pytest.mark.slow  # trains the toy models (about half a minute)

N = 2000  # samples per check

# Sliced W1 bounds in the data's units, between what the fast models reach (seed 0) and what
# Gaussian noise of the same mean and covariance scores; both sides are asserted below.
BOUNDS = {"mixture": 0.07, "ramp": 0.017, "spiral": 0.04, "swiss_roll": 0.06}


@pytest.fixture(scope="module")
def toy_models() -> dict[str, ToyDiffusion]:
    return {name: train_toy(dataset, TOY_SETTINGS["fast"], conditional=bool(dataset.label_names), seed=0)
            for name, dataset in TOY_DATASETS.items()}


def fresh_data(name: str, seed: int = 100) -> np.ndarray:
    return TOY_DATASETS[name].sample(N, seed)[0]


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_samples_match_the_data_and_gaussian_noise_does_not(toy_models, name):
    fresh = fresh_data(name)
    assert sliced_wasserstein(gaussian_like(fresh, seed=1), fresh) > BOUNDS[name]
    assert sliced_wasserstein(fresh_data(name, seed=200), fresh) < BOUNDS[name] / 2  # the bound is above sampling noise
    samples = toy_models[name].sample(N, SamplerConfig("ddpm"), seed=1)
    assert samples.shape == fresh.shape and np.isfinite(samples).all()
    assert sliced_wasserstein(samples, fresh) < BOUNDS[name]


@pytest.mark.parametrize("sampler", ["ddim", "langevin"])
def test_other_samplers_of_the_same_model_recover_the_mixture(toy_models, sampler):
    fresh = fresh_data("mixture")
    samples = toy_models["mixture"].sample(N, SamplerConfig(sampler, 100), seed=1)
    assert sliced_wasserstein(samples, fresh) < BOUNDS["mixture"]
    # both modes, in about the right proportion (0.3 left)
    assert abs((samples < 0).mean() - 0.3) < 0.05


def test_prompts_pick_a_side_of_the_mixture(toy_models):
    model = toy_models["mixture"]
    left = model.sample(N, labels=torch.zeros(N, dtype=torch.long), seed=2)
    right = model.sample(N, labels=torch.ones(N, dtype=torch.long), seed=2)
    assert (left < 0).mean() >= 0.95
    assert (right > 0).mean() >= 0.95
    # prompted samples follow their component N(±0.5, 0.2²)
    assert abs(left.mean() + 0.5) < 0.05 and abs(right.mean() - 0.5) < 0.05
    assert abs(left.std() - 0.2) < 0.04 and abs(right.std() - 0.2) < 0.04


def test_toy_data_has_the_stated_moments():
    rng_n = 200_000
    mixture, labels = TOY_DATASETS["mixture"].sample(rng_n, 0)
    assert abs((labels == 0).mean() - 0.3) < 0.005
    assert abs(mixture.mean() - (0.3 * -0.5 + 0.7 * 0.5)) < 0.005
    assert abs(mixture.var() - (0.2 ** 2 + 0.25 - 0.2 ** 2)) < 0.005  # within-std² + spread of the centres
    ramp, _ = TOY_DATASETS["ramp"].sample(rng_n, 0)  # min of two uniforms ~ Beta(1, 2)
    assert ramp.min() >= 0 and ramp.max() <= 1
    assert abs(ramp.mean() - 1 / 3) < 0.005 and abs(ramp.var() - 1 / 18) < 0.002
    spiral, _ = TOY_DATASETS["spiral"].sample(rng_n, 0)
    radius = np.linalg.norm(spiral, axis=1)
    assert radius.min() >= 0.25 and radius.max() <= 1.05
    assert np.array_equal(TOY_DATASETS["swiss_roll"].sample(10, 3)[0], TOY_DATASETS["swiss_roll"].sample(10, 3)[0])


def test_sliced_wasserstein_of_shifted_points_is_the_shift():
    """W1 between a set and its translate by c is |c·θ| per direction θ: in 1-D exactly |c|, and in
    2-D the mean of |c·θ| over directions, E|cos| = 2/π times |c|."""
    points = np.random.default_rng(0).standard_normal((3000, 2))
    assert sliced_wasserstein(points[:, :1], points[:, :1] + 0.3) == pytest.approx(0.3)
    shifted = sliced_wasserstein(points, points + np.array([0.3, 0.4]), num_projections=4000)
    assert shifted == pytest.approx(0.5 * 2 / np.pi, rel=0.03)


def test_unknown_toy_data_set_is_refused():
    with pytest.raises(LdmError, match="choose one of mixture"):
        get_toy_dataset("moons")

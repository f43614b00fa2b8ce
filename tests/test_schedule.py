import math

import pytest
import torch

from ldm.schedule import NoiseSchedule, cosine_betas, extract, linear_betas, make_betas


def test_linear_betas_endpoints_and_dtype():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert bool((betas[1:] > betas[:-1]).all())


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alphas_cumprod_is_the_cumulative_product_and_decreasing(name):
    s = NoiseSchedule.from_name(name, 1000)
    expected = torch.tensor([math.prod(1 - b for b in s.betas.tolist()[: t + 1]) for t in (0, 10, 500, 999)],
                            dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod[[0, 10, 500, 999]], expected, rtol=1e-10, atol=0)
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())
    assert 0 < s.alphas_cumprod[-1] < 0.05  # the chain ends close to pure noise


def test_cosine_alpha_bar_matches_its_closed_form():
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    sched = NoiseSchedule(cosine_betas(T, s))
    for t in (0, 100, 500, 900):  # before the max_beta clipping at the very end
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_posterior_variance_matches_known_values():
    # β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t); reference values of the linear schedule (diffusers' test)
    s = NoiseSchedule.from_name("linear", 1000)
    assert s.posterior_variance[0].item() == 0.0
    assert s.posterior_variance[487].item() == pytest.approx(0.00979, abs=1e-5)
    assert s.posterior_variance[999].item() == pytest.approx(0.02, abs=1e-5)


def test_posterior_mean_coefficients_reproduce_x0_at_t0():
    s = NoiseSchedule.from_name("linear", 1000)
    assert s.posterior_mean_coef1[0].item() == pytest.approx(1.0) and s.posterior_mean_coef2[0].item() == 0.0


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="cosine.*linear"):
        make_betas("sigmoid", 1000)


def test_extract_broadcasts_in_the_input_dtype():
    s = NoiseSchedule.from_name("linear", 100)
    x = torch.zeros(3, 4, 7, 7)
    out = extract(s.betas, torch.tensor([0, 50, 99]), x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    assert out[2].item() == pytest.approx(s.betas[99].item())


def test_too_few_timesteps_for_the_linear_schedule_is_an_error():
    with pytest.raises(ValueError, match="β > 1"):
        make_betas("linear", 10)

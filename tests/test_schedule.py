import math

import pytest
import torch

from ldm.schedule import NoiseSchedule, Posterior, cosine_betas, extract, linear_betas, posterior


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


def one_step_posterior(s: NoiseSchedule, t: int) -> Posterior:
    """posterior() of the step t -> t-1 (ᾱ_{-1} = 1)."""
    a = s.alphas_cumprod.tolist()
    return posterior(a[t], a[t - 1] if t > 0 else 1.0)


def test_posterior_variance_matches_known_values():
    # β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t); reference values of the linear schedule (diffusers' test)
    s = NoiseSchedule.from_name("linear", 1000)
    assert one_step_posterior(s, 0).beta_tilde == 0.0
    assert one_step_posterior(s, 487).beta_tilde == pytest.approx(0.00979, abs=1e-5)
    assert one_step_posterior(s, 999).beta_tilde == pytest.approx(0.02, abs=1e-5)
    # the variance of one step is β_t itself
    assert [one_step_posterior(s, t).beta for t in (1, 487, 999)] == pytest.approx(s.betas[[1, 487, 999]].tolist())


def test_posterior_mean_coefficients_reproduce_x0_at_t0_and_match_eq7():
    s = NoiseSchedule.from_name("linear", 1000)
    coef_x0, coef_xt, _, _ = one_step_posterior(s, 0)
    assert coef_x0 == pytest.approx(1.0) and coef_xt == 0.0
    # eq. (7) of 2006.11239 with the one-step tables: √ᾱ_{t-1} β_t / (1-ᾱ_t) and √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t)
    a, betas = s.alphas_cumprod.tolist(), s.betas.tolist()
    for t in (1, 300, 999):
        coef_x0, coef_xt, _, _ = one_step_posterior(s, t)
        assert coef_x0 == pytest.approx(a[t - 1] ** 0.5 * betas[t] / (1 - a[t]), rel=1e-9)
        assert coef_xt == pytest.approx((1 - betas[t]) ** 0.5 * (1 - a[t - 1]) / (1 - a[t]), rel=1e-9)


def test_posterior_of_a_long_step_is_the_bayes_posterior():
    """q(x_s | x_t, x_0) for s < t by Gaussian conditioning of the joint of (x_s, x_t) given x_0:
    Cov(x_s, x_t) = √(ᾱ_t/ᾱ_s)(1 - ᾱ_s), so E[x_s | x_t, x_0] and Var follow in closed form."""
    s = NoiseSchedule.from_name("cosine", 1000)
    a = s.alphas_cumprod.tolist()
    for t, u in ((999, 899), (500, 480), (20, 0)):
        cov, var_t, var_s = (a[t] / a[u]) ** 0.5 * (1 - a[u]), 1 - a[t], 1 - a[u]
        gain = cov / var_t  # regression of x_s on x_t (both centred on their x_0 means)
        coef_x0, coef_xt, _, variance = posterior(a[t], a[u])
        assert coef_xt == pytest.approx(gain, rel=1e-9)
        assert coef_x0 == pytest.approx(a[u] ** 0.5 - gain * a[t] ** 0.5, rel=1e-9)
        assert variance == pytest.approx(var_s - cov ** 2 / var_t, rel=1e-9)


def test_extract_broadcasts_in_the_input_dtype():
    s = NoiseSchedule.from_name("linear", 100)
    x = torch.zeros(3, 4, 7, 7)
    out = extract(s.betas, torch.tensor([0, 50, 99]), x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    assert out[2].item() == pytest.approx(s.betas[99].item())

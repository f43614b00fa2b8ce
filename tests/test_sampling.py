"""Samplers on a known distribution. For data N(m, s²) the optimal ε-prediction is known in
closed form, and every DDPM/DDIM step is then linear in x_t, so the exact mean and variance of
the samples follow from a scalar recursion: the samplers must match it, and with many steps it
must approach the data's own N(m, s²)."""

import pytest
import torch

from ldm.errors import ConfigError
from ldm.sampling import (DEFAULT_SAMPLER, LOGSNR_MIN, UNCONDITIONAL_DEFAULTS, SamplerConfig, ddim_sample, ddpm_sample,
                          dpm_solver_2m_sample, half_log_snr, langevin_sample, logsnr_timesteps, sampling_timesteps,
                          spaced_timesteps)
from ldm.schedule import NoiseSchedule

MEAN, STD = 1.0, 0.5
N = 40_000  # samples per test: the std's relative standard error is 1/sqrt(2N) = 0.35%


def oracle_eps(schedule: NoiseSchedule):
    """E[ε | x_t] for x_0 ~ N(MEAN, STD²): x_t ~ N(√ᾱ m, ᾱ s² + 1 - ᾱ), ε̂ = √(1-ᾱ)(x_t - √ᾱ m) / Var x_t."""
    def model(x, t):
        a = schedule.alphas_cumprod[t].float().reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * MEAN) / (a * STD ** 2 + 1 - a)
    return model


def expected_std(schedule: NoiseSchedule, steps: int, kind: str, eta: float = 0.0) -> float:
    """Propagate Var x through the sampler's linear steps: x_s - √ᾱ_s m = k (x_t - √ᾱ_t m) + σ z."""
    a = schedule.alphas_cumprod.tolist()
    ts = sampling_timesteps(schedule.num_timesteps, steps)
    var = 1.0  # x_T ~ N(0, 1)
    for i, t in enumerate(ts):
        a_t, a_s = a[t], (a[ts[i + 1]] if i + 1 < len(ts) else 1.0)
        v_t = a_t * STD ** 2 + 1 - a_t  # the oracle's view of Var x_t
        x0_gain, eps_gain = a_t ** 0.5 * STD ** 2 / v_t, (1 - a_t) ** 0.5 / v_t  # d x̂0/dx_t, d ε̂/dx_t
        beta = 1 - a_t / a_s
        if kind == "ddim":
            sigma2 = eta ** 2 * (1 - a_s) / (1 - a_t) * beta
            k = a_s ** 0.5 * x0_gain + max(1 - a_s - sigma2, 0) ** 0.5 * eps_gain
        else:
            k = a_s ** 0.5 * beta / (1 - a_t) * x0_gain + (1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t)
            sigma2 = beta if kind == "ddpm-beta" else beta * (1 - a_s) / (1 - a_t)
        var = k ** 2 * var + (sigma2 if i + 1 < len(ts) else 0.0)
    return var ** 0.5


CASES = {  # id: (sampler call, kind for expected_std, steps, eta)
    "ddpm-1000-beta-tilde": (lambda m, s, g: ddpm_sample(m, s, (N, 1), steps=1000, generator=g), "ddpm", 1000, 0.0),
    "ddpm-1000-beta": (lambda m, s, g: ddpm_sample(m, s, (N, 1), steps=1000, variance="beta", generator=g), "ddpm-beta", 1000, 0.0),
    "ddpm-100": (lambda m, s, g: ddpm_sample(m, s, (N, 1), steps=100, generator=g), "ddpm", 100, 0.0),
    "ddim-1000": (lambda m, s, g: ddim_sample(m, s, (N, 1), steps=1000, generator=g), "ddim", 1000, 0.0),
    "ddim-50": (lambda m, s, g: ddim_sample(m, s, (N, 1), steps=50, generator=g), "ddim", 50, 0.0),
    "ddim-20-eta-half": (lambda m, s, g: ddim_sample(m, s, (N, 1), steps=20, eta=0.5, generator=g), "ddim", 20, 0.5),
}


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_samplers_match_the_exact_gaussian_answer(schedule_name, case):
    sample, kind, steps, eta = CASES[case]
    s = NoiseSchedule.from_name(schedule_name, 1000)
    x = sample(oracle_eps(s), s, torch.Generator().manual_seed(0))
    target = expected_std(s, steps, kind, eta)
    assert abs(x.mean().item() - MEAN) < 0.015  # mean is preserved exactly; 6 standard errors
    assert abs(x.std().item() / target - 1) < 0.02
    if steps == 1000:  # the full chain recovers the data distribution itself
        assert abs(target / STD - 1) < 0.02


def test_few_deterministic_steps_shrink_the_variance():
    """Why the target above is not simply STD: coarse DDIM steps lose variance (Cauchy-Schwarz)."""
    s = NoiseSchedule.from_name("linear", 1000)
    assert expected_std(s, 20, "ddim") < 0.9 * STD < expected_std(s, 1000, "ddim")


def test_samplers_fail_with_a_wrong_model():
    """The checks above can fail: a model that ignores the data mean misses it."""
    s = NoiseSchedule.from_name("linear", 1000)
    x = ddim_sample(lambda x, t: torch.zeros_like(x), s, (5000, 2), steps=50, generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MEAN) > 0.5


def test_ddim_with_eta_one_is_the_ddpm_posterior_step():
    s = NoiseSchedule.from_name("linear", 1000)
    model = oracle_eps(s)
    a = ddim_sample(model, s, (100, 3), steps=30, eta=1.0, generator=torch.Generator().manual_seed(1))
    b = ddpm_sample(model, s, (100, 3), steps=30, variance="beta_tilde", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_stochastic_dpm_solver_of_first_order_is_the_ddpm_posterior_step():
    """SDE-DPM-Solver++ (η = 1) takes DDPM's ancestral step with x̂_0 replaced by its multistep D:
    without the history (order 1) it is DDPM itself, whatever the model."""
    s = NoiseSchedule.from_name("cosine", 1000)
    model = lambda x, t: oracle_eps(s)(x, t) + 0.1 * torch.sin(3 * x)
    for spacing in ("time", "logsnr"):
        a = dpm_solver_2m_sample(model, s, (64, 3), steps=12, spacing=spacing, order=1, eta=1.0,
                                 generator=torch.Generator().manual_seed(1))
        b = ddpm_sample(model, s, (64, 3), steps=12, spacing=spacing, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_stochastic_dpm_solver_recovers_the_gaussian_data(eta):
    """With the exact ε of Gaussian data, DPM-Solver++ at any η keeps the mean and, with enough
    steps, recovers the data's standard deviation: the noise it adds must exactly replace what the
    shrunken coefficient of x_t takes away."""
    s = NoiseSchedule.from_name("cosine", 1000)
    x = dpm_solver_2m_sample(oracle_eps(s), s, (N, 1), steps=200, eta=eta, generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MEAN) < 0.015 and abs(x.std().item() / STD - 1) < 0.02


def test_same_generator_gives_identical_samples():
    s = NoiseSchedule.from_name("linear", 1000)
    run = lambda: ddpm_sample(oracle_eps(s), s, (50, 4), steps=20, generator=torch.Generator().manual_seed(7))
    assert torch.equal(run(), run())


def test_sampling_timesteps():
    assert sampling_timesteps(1000, 1000) == list(range(999, -1, -1))
    # every chain starts from noise, at T-1, however few its steps
    assert sampling_timesteps(1000, 1) == [999] and sampling_timesteps(1000, 2) == [999, 0]
    steps = sampling_timesteps(1000, 50)
    assert len(steps) == 50 and steps[0] == 999 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    for steps in (0, 1001):
        with pytest.raises(ConfigError, match="1..1000"):
            sampling_timesteps(1000, steps)


def test_sampler_config_validates_once_and_names_itself():
    assert SamplerConfig("ddim").steps == 50 and SamplerConfig("ddpm").steps == 1000
    assert [SamplerConfig("ddpm", 100).label, SamplerConfig("ddpm", 1000, variance="beta").label,
            SamplerConfig("ddim", 20, eta=0.5).label, SamplerConfig("langevin").label] == \
        ["DDPM-100", "DDPM-1000 σ²=β", "DDIM-20 η=0.5", "Langevin-100"]
    assert SamplerConfig("dpm++2m", 20, eta=1).label == "DPM++2M-20 η=1"
    for bad, field in (({"sampler": "euler"}, "sampler"), ({"variance": "sigma"}, "variance"), ({"eta": -1}, "eta"),
                       ({"eta": 1.5}, "eta"), ({"sampler": "ddpm", "eta": 0.5}, "eta"),
                       ({"sampler": "langevin", "eta": 1}, "eta")):
        with pytest.raises(ConfigError) as error:
            SamplerConfig(**bad)
        assert error.value.field == field


def test_each_branch_gets_its_default_sampler_and_what_is_asked_for_wins():
    conditional, unconditional = SamplerConfig.for_branch(False), SamplerConfig.for_branch(True)
    assert conditional == SamplerConfig() and conditional.sampler == unconditional.sampler == DEFAULT_SAMPLER
    assert (unconditional.steps, unconditional.eta) == (UNCONDITIONAL_DEFAULTS[DEFAULT_SAMPLER]["steps"],
                                                        UNCONDITIONAL_DEFAULTS[DEFAULT_SAMPLER]["eta"])
    assert unconditional != conditional  # the branches differ, or the table would not be needed
    assert SamplerConfig.for_branch(True, steps=7) == SamplerConfig(steps=7, eta=unconditional.eta)
    assert SamplerConfig.for_branch(True, eta=0) == SamplerConfig(steps=unconditional.steps)
    assert SamplerConfig.for_branch(True, "ddim") == SamplerConfig("ddim")  # the table is the default sampler's only
    assert SamplerConfig.defaults_label() == f"{conditional.label} (no label: {unconditional.label})"


def test_sampler_config_runs_the_sampler_it_names():
    s = NoiseSchedule.from_name("linear", 1000)
    direct = ddim_sample(oracle_eps(s), s, (64, 2), steps=20, eta=0.3, generator=torch.Generator().manual_seed(3))
    config = SamplerConfig("ddim", 20, eta=0.3).run(oracle_eps(s), s, (64, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(direct, config)


def langevin_moments(schedule: NoiseSchedule, levels: int, steps_per_level: int, step_scale: float):
    """Exact mean and std of annealed Langevin with the oracle: at level t the score is
    -(x - √ᾱ m)/v_t, so each update x <- x + δ/2·score + √δ z is linear in x."""
    a = schedule.alphas_cumprod.tolist()
    mean, var = 0.0, 1.0
    for t in sampling_timesteps(schedule.num_timesteps, levels):
        v, delta = a[t] * STD ** 2 + 1 - a[t], step_scale * (1 - a[t])
        for _ in range(steps_per_level):
            k = 1 - delta / (2 * v)
            mean, var = k * mean + (1 - k) * a[t] ** 0.5 * MEAN, k ** 2 * var + delta
    # the final x̂_0 = (x - √(1-ᾱ) ε̂)/√ᾱ at the last level t = 0
    gain = (1 - (1 - a[0]) / v) / a[0] ** 0.5
    return gain * mean + (1 - a[0]) * MEAN / v, gain * var ** 0.5


def test_langevin_with_the_exact_score_matches_its_recursion_and_the_data():
    s = NoiseSchedule.from_name("linear", 1000)
    x = langevin_sample(oracle_eps(s), s, (N, 1), levels=100, steps_per_level=10,
                        generator=torch.Generator().manual_seed(0))
    mean, std = langevin_moments(s, 100, 10, 0.2)
    assert abs(x.mean().item() - mean) < 0.015 and abs(x.std().item() / std - 1) < 0.02
    # the recursion tends to the data's N(m, s²) as the updates per level grow: the bias of finite
    # steps shrinks at every doubling
    biases = [(abs(m - MEAN), abs(sd / STD - 1)) for m, sd in (langevin_moments(s, 100, n, 0.2)
                                                                 for n in (10, 20, 40, 80))]
    assert all(a[0] > b[0] and a[1] > b[1] for a, b in zip(biases, biases[1:]))


def test_langevin_with_too_few_updates_does_not_reach_the_data():
    """The check above can fail: one update per level from N(0, 1) leaves the mean short of m."""
    s = NoiseSchedule.from_name("linear", 1000)
    x = langevin_sample(oracle_eps(s), s, (N, 1), levels=10, steps_per_level=1,
                        generator=torch.Generator().manual_seed(0))
    mean, _ = langevin_moments(s, 10, 1, 0.2)
    assert abs(x.mean().item() - mean) < 0.015
    assert abs(mean - MEAN) > 0.1


def test_langevin_settings_outside_their_domain_are_refused():
    s = NoiseSchedule.from_name("linear", 1000)
    for bad, field in (({"steps_per_level": 0}, "steps_per_level"), ({"step_scale": -0.1}, "step_scale")):
        with pytest.raises(ConfigError) as error:
            langevin_sample(oracle_eps(s), s, (4, 1), levels=2, **bad)
        assert error.value.field == field


def affine_map(sample, schedule: NoiseSchedule) -> tuple[float, float]:
    """With the oracle, a deterministic sampler is affine in x_T: out = k x_T + c, so for
    x_T ~ N(0, 1) its samples are exactly N(c, k²). k and c are read off two starting points."""
    x_T = torch.randn((2, 1), generator=torch.Generator().manual_seed(0))  # what the sampler draws
    out = sample(oracle_eps(schedule), schedule, (2, 1), generator=torch.Generator().manual_seed(0))
    k = (out[1] - out[0]) / (x_T[1] - x_T[0])
    return k.item(), (out[0] - k * x_T[0]).item()


def ode_solution(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    """The probability-flow ODE from x_t ~ N(0, 1) to t = 0 for data N(m, s²): each x_t maps to
    m + s (x_t - √ᾱ_t m) / √(ᾱ_t s² + 1 - ᾱ_t), the map that carries q(x_t) onto the data.
    Returns (slope k*, intercept c*)."""
    a = schedule.alphas_cumprod[t].item()
    k = STD / (a * STD ** 2 + 1 - a) ** 0.5
    return k, MEAN - k * a ** 0.5 * MEAN


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_dpm_solver_converges_at_second_order_and_ddim_at_first(schedule_name):
    """DPM-Solver++(2M) is second order in the log-SNR step h (global error O(h²)), DDIM first
    order (O(h)): doubling the steps (halving h) must divide DDIM's error in the samples' standard
    deviation by about 2 and DPM-Solver++'s by about 4, as h → 0; both solve the same ODE, so at
    every step count the second-order solver is also the closer one. Checked from 20 to 40 steps
    (the ratios tend to 2 and 4; the bounds allow 15% and 25% for the finite h)."""
    s = NoiseSchedule.from_name(schedule_name, 1000)
    errors = {}
    for steps in (10, 20, 40):
        k_star, c_star = ode_solution(s, spaced_timesteps(s, steps, "logsnr")[0])
        for name, sample in (("dpm", dpm_solver_2m_sample), ("ddim", ddim_sample)):
            k, c = affine_map(lambda *a, **kw: sample(*a, steps=steps, spacing="logsnr", **kw), s)
            errors[name, steps] = (abs(k / k_star - 1), abs(c - c_star))
        assert all(errors["dpm", steps][i] < errors["ddim", steps][i] for i in (0, 1))
    assert 1.7 < errors["ddim", 20][0] / errors["ddim", 40][0] < 2.3
    assert 3.0 < errors["dpm", 20][0] / errors["dpm", 40][0] < 5.0


def test_first_order_dpm_solver_is_ddim_to_the_last_bit():
    s = NoiseSchedule.from_name("cosine", 1000)
    model = lambda x, t: oracle_eps(s)(x, t) + 0.1 * torch.sin(3 * x)  # any model, not only the oracle
    for spacing in ("time", "logsnr"):
        a = dpm_solver_2m_sample(model, s, (64, 3), steps=12, spacing=spacing, order=1,
                                 generator=torch.Generator().manual_seed(1))
        b = ddim_sample(model, s, (64, 3), steps=12, spacing=spacing, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_logsnr_timesteps_are_distinct_and_even_in_lambda(schedule_name):
    s = NoiseSchedule.from_name(schedule_name, 1000)
    for steps in (5, 10, 20, 50, 1000):
        ts = logsnr_timesteps(s, steps)
        assert len(ts) == steps and all(a > b for a, b in zip(ts, ts[1:])) and ts[-1] == 0 and ts[0] <= 999
    lambdas = half_log_snr(s.alphas_cumprod[logsnr_timesteps(s, 10)])
    gaps = lambdas[1:] - lambdas[:-1]
    assert lambdas[0] >= LOGSNR_MIN - 0.1 and (gaps - gaps.mean()).abs().max() < 0.1 * gaps.mean()


@pytest.mark.parametrize("steps", [1, 2])
def test_one_or_two_steps_start_from_noise_and_land_on_the_data(steps):
    """With the exact ε of Gaussian data, one DDIM step from T-1 already returns x̂_0, whose mean
    is the data's (√ᾱ_{T-1} ≈ 0 leaves x_T nearly pure noise, so x̂_0 ≈ E[x_0] = m); a chain that
    started at t = 0 would instead return its noise unchanged, with mean 0 and std 1."""
    s = NoiseSchedule.from_name("linear", 1000)
    x = ddim_sample(oracle_eps(s), s, (N, 1), steps=steps, generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MEAN) < 5 * STD / N ** 0.5  # 5 standard errors, at most

import math

import pytest
import torch

from ldm.diffusion import LOG_NORMAL, LOGIT_NORMAL, Diffusion, DiffusionConfig
from ldm.errors import ConfigError
from ldm.schedule import NoiseSchedule


def diffusion(schedule: str = "linear", prediction: str = "eps", **changes) -> Diffusion:
    return Diffusion(DiffusionConfig(schedule=schedule, prediction=prediction, **changes))


def test_q_sample_mean_and_variance_match_closed_form():
    s = NoiseSchedule.from_name("linear", 1000)
    torch.manual_seed(0)
    for t_value in (0, 250, 999):
        x0 = torch.full((200_000, 1), 1.5)
        t = torch.full((len(x0),), t_value)
        xt = s.q_sample(x0, t)
        alpha_bar = s.alphas_cumprod[t_value].item()
        # standard errors: sqrt(var/N) ~ 0.002 for the mean; 0.3% relative for the variance
        assert abs(xt.mean().item() - 1.5 * alpha_bar ** 0.5) < 0.01
        assert abs(xt.var().item() / (1 - alpha_bar) - 1) < 0.02


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule.from_name("cosine", 1000)
    x0, noise = torch.randn(64, 4, 7, 7), torch.randn(64, 4, 7, 7)
    t = torch.randint(0, 1000, (64,))
    torch.testing.assert_close(s.predict_x0(s.q_sample(x0, t, noise), t, noise), x0, rtol=1e-4, atol=1e-3)


def test_training_loss_is_zero_for_the_oracle_and_one_for_a_zero_model():
    d = diffusion()
    x0, noise = torch.randn(512, 8), torch.randn(512, 8)
    losses, t = d.losses(lambda x_t, t: noise, x0, noise=noise)
    assert losses.shape == (512,) and t.shape == (512,) and losses.abs().max().item() == 0.0
    zero_losses, _ = d.losses(lambda x_t, t: torch.zeros_like(x_t), x0, noise=noise)
    torch.testing.assert_close(zero_losses, noise.pow(2).mean(1))


def test_v_prediction_round_trips_to_eps_and_x0():
    d = diffusion("cosine", "v")
    s = d.schedule
    x0, noise = torch.randn(256, 4), torch.randn(256, 4)
    t = torch.randint(0, 1000, (256,))
    x_t = s.q_sample(x0, t, noise)
    v = s.velocity(x0, t, noise)
    eps = d.eps_model(lambda x, t_, labels: v)(x_t, t)  # what the samplers see of a v-predictor
    torch.testing.assert_close(eps, noise, rtol=1e-4, atol=1e-4)
    # v is the derivative of x_φ = cos φ x_0 + sin φ ε in φ, so |v|² + |x_t|² = |x_0|² + |ε|² for unit-norm rows
    x0u, nu = x0 / x0.norm(dim=1, keepdim=True), noise - (noise * x0).sum(1, keepdim=True) * x0 / x0.pow(2).sum(1, keepdim=True)
    nu = nu / nu.norm(dim=1, keepdim=True)
    vu, xu = s.velocity(x0u, t, nu), s.q_sample(x0u, t, nu)
    torch.testing.assert_close(vu.pow(2).sum(1) + xu.pow(2).sum(1), torch.full((256,), 2.0), rtol=1e-4, atol=1e-4)
    losses, _ = d.losses(lambda x, t_: v, x0, t, noise)
    assert losses.abs().max().item() < 1e-10


def test_min_snr_weights_match_their_definition():
    x0, noise = torch.randn(1000, 2), torch.randn(1000, 2)
    t = torch.arange(1000)
    zero = lambda x, t_: torch.zeros_like(x)
    plain, _ = diffusion().losses(zero, x0, t, noise)
    weighted, _ = diffusion(min_snr_gamma=5.0).losses(zero, x0, t, noise)
    a = NoiseSchedule.from_name("linear").alphas_cumprod
    ratio = (a / (1 - a)).float()
    torch.testing.assert_close(weighted, plain * ratio.clamp(max=5.0) / ratio)
    # low-noise steps (SNR > γ) are down-weighted, high-noise steps (SNR < γ) keep weight 1
    assert (weighted[:10] < plain[:10]).all()
    torch.testing.assert_close(weighted[-10:], plain[-10:], rtol=1e-6, atol=0)  # x·r/r rounds
    plain_v, _ = diffusion(prediction="v").losses(zero, x0, t, noise)
    weighted_v, _ = diffusion(prediction="v", min_snr_gamma=5.0).losses(zero, x0, t, noise)
    torch.testing.assert_close(weighted_v, plain_v * ratio.clamp(max=5.0) / (ratio + 1))


@pytest.mark.parametrize("change, field", [
    ({"schedule": "sigmoid"}, "schedule"), ({"prediction": "x0"}, "prediction"),
    ({"num_timesteps": 0}, "num_timesteps"), ({"schedule": "linear", "num_timesteps": 19}, "num_timesteps"),
    ({"min_snr_gamma": 0.0}, "min_snr_gamma"), ({"label_dropout": 1.5}, "label_dropout"),
    ({"timesteps": "beta"}, "timesteps")])
def test_a_config_outside_its_domain_is_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError) as error:
        DiffusionConfig(**change)
    assert error.value.field == field
    if field == "schedule":
        assert "linear, cosine" in str(error.value)
    DiffusionConfig(**dict(change, **{field: getattr(DiffusionConfig(), field)}))  # the default is accepted


def binned_draws(density: str, schedule: NoiseSchedule, n: int, generator: torch.Generator) -> torch.Tensor:
    """Continuous draws of the density, each put in the timestep whose noise level is nearest
    (independently of timestep_probabilities' closed form): counts per timestep."""
    normal = torch.randn(n, generator=generator, dtype=torch.float64)
    T = schedule.num_timesteps
    if density == "logit-normal":
        m, s = LOGIT_NORMAL
        t = (torch.sigmoid(m + s * normal) * T).floor().long().clamp(max=T - 1)
    else:
        m, s = LOG_NORMAL
        a = schedule.alphas_cumprod
        log_sigma = 0.5 * torch.log((1 - a) / a)
        t = torch.searchsorted(log_sigma, m + s * normal).clamp(1, T - 1)
        t = torch.where((m + s * normal - log_sigma[t - 1]).abs() < (log_sigma[t] - (m + s * normal)).abs(), t - 1, t)
    return torch.bincount(t, minlength=T).double()


@pytest.mark.parametrize("density", ["logit-normal", "log-normal"])
def test_timestep_densities_put_each_bin_s_share_of_the_continuous_density(density):
    d = diffusion("cosine", "v", timesteps=density)
    probs = d.timestep_probs
    assert probs.shape == (1000,) and (probs >= 0).all() and abs(probs.sum().item() - 1) < 1e-12
    n = 2_000_000
    counts = binned_draws(density, d.schedule, n, torch.Generator().manual_seed(0))
    # each bin a binomial count: within 5 standard errors (plus one count) of n·p
    assert ((counts - n * probs).abs() <= 5 * (n * probs * (1 - probs)).sqrt() + 1).all()
    # and the drawn timesteps themselves follow the probabilities
    torch.manual_seed(0)
    drawn = torch.bincount(d.draw_timesteps(n), minlength=1000).double()
    assert ((drawn - n * probs).abs() <= 5 * (n * probs * (1 - probs)).sqrt() + 1).all()



def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def test_the_logit_normal_mass_of_the_middle_third_is_its_closed_form():
    probs = diffusion("cosine", "v", timesteps="logit-normal").timestep_probs
    m, s = LOGIT_NORMAL
    # u in [1/3, 2/3]: logit u in [-ln 2, ln 2]; 0.512 for (0, 1), against uniform's 1/3
    expected = normal_cdf((math.log(2) - m) / s) - normal_cdf((-math.log(2) - m) / s)
    assert probs[333:666].sum().item() == pytest.approx(expected, abs=probs[333].item())


def test_the_logit_normal_density_is_symmetric_about_the_middle_timestep():
    probs = diffusion("cosine", "v", timesteps="logit-normal").timestep_probs
    assert LOGIT_NORMAL[0] == 0.0
    torch.testing.assert_close(probs, probs.flip(0), rtol=1e-9, atol=1e-15)


def test_log_normal_puts_one_deviation_s_mass_within_one_deviation_of_edm_s_mean():
    d = diffusion("cosine", "v", timesteps="log-normal")
    a = d.schedule.alphas_cumprod
    log_sigma = 0.5 * torch.log((1 - a) / a)
    m, s = LOG_NORMAL
    inside = (log_sigma >= m - s) & (log_sigma <= m + s)
    # Φ(1) - Φ(-1) = 0.683, to within the two edge bins
    edge = d.timestep_probs[inside].max().item()
    assert d.timestep_probs[inside].sum().item() == pytest.approx(normal_cdf(1) - normal_cdf(-1), abs=2 * edge)
    median_t = int((d.timestep_probs.cumsum(0) < 0.5).sum())
    assert abs(log_sigma[median_t].item() - m) < log_sigma[median_t + 1].item() - log_sigma[median_t - 1].item()


def test_uniform_timesteps_are_drawn_as_before():
    torch.manual_seed(3)
    expected = torch.randint(0, 1000, (500,))
    torch.manual_seed(3)
    assert torch.equal(diffusion("cosine", "v", timesteps="uniform").draw_timesteps(500), expected)
    assert diffusion("cosine", "v", timesteps="uniform").timestep_probs is None

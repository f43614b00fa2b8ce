import torch

from ldm.diffusion import predict_x0_from_eps, q_sample, training_losses
from ldm.schedule import NoiseSchedule


def test_q_sample_mean_and_variance_match_closed_form():
    s = NoiseSchedule.from_name("linear", 1000)
    torch.manual_seed(0)
    for t_value in (0, 250, 999):
        x0 = torch.full((200_000, 1), 1.5)
        t = torch.full((len(x0),), t_value)
        xt = q_sample(s, x0, t)
        alpha_bar = s.alphas_cumprod[t_value].item()
        # standard errors: sqrt(var/N) ~ 0.002 for the mean; 0.3% relative for the variance
        assert abs(xt.mean().item() - 1.5 * alpha_bar ** 0.5) < 0.01
        assert abs(xt.var().item() / (1 - alpha_bar) - 1) < 0.02


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule.from_name("cosine", 1000)
    x0, noise = torch.randn(64, 4, 7, 7), torch.randn(64, 4, 7, 7)
    t = torch.randint(0, 1000, (64,))
    torch.testing.assert_close(predict_x0_from_eps(s, q_sample(s, x0, t, noise), t, noise), x0, rtol=1e-4, atol=1e-3)


def test_training_loss_is_zero_for_the_oracle_and_one_for_a_zero_model():
    s = NoiseSchedule.from_name("linear", 1000)
    x0, noise = torch.randn(512, 8), torch.randn(512, 8)
    oracle = lambda x_t, t: noise
    losses, t = training_losses(oracle, s, x0, noise=noise)
    assert losses.shape == (512,) and t.shape == (512,) and losses.abs().max().item() == 0.0
    zero_losses, _ = training_losses(lambda x_t, t: torch.zeros_like(x_t), s, x0, noise=noise)
    torch.testing.assert_close(zero_losses, noise.pow(2).mean(1))

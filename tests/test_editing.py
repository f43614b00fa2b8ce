"""Editing (ldm/editing.py) on Gaussian data, where the optimal denoiser and the answers are known
in closed form: SDEdit from a given point is the diffusion posterior given that point's noised
version, inpainting should sample the conditional of the generated coordinates given the kept ones;
and the helpers (masks, image checks, slerp, mixed labels) against their definitions."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_sampling import MEAN, STD, oracle_eps

from ldm.editing import Edit, as_images, as_mask, latent_mask, slerp
from ldm.errors import ConfigError
from ldm.guidance import guided_model
from ldm.nn import LabelEmbedding
from ldm.sampling import SamplerConfig, ddim_sample, ddpm_sample, sampling_timesteps
from ldm.schedule import NoiseSchedule

N = 40_000  # the std's relative standard error is 1/sqrt(2N) = 0.35%


def posterior_given_xt(alpha_bar: float) -> tuple[float, float]:
    """For x_0 ~ N(MEAN, STD²) and x_t = √ᾱ x_0 + √(1-ᾱ) ε: E[x_0 | x_t] = MEAN + k (x_t - √ᾱ MEAN)
    with k = √ᾱ STD² / V, V = ᾱ STD² + 1 - ᾱ, and Var[x_0 | x_t] = STD² (1 - ᾱ) / V."""
    v = alpha_bar * STD ** 2 + 1 - alpha_bar
    return alpha_bar ** 0.5 * STD ** 2 / v, STD ** 2 * (1 - alpha_bar) / v


@pytest.mark.parametrize("strength", [0.3, 0.6])
def test_sdedit_with_the_full_ancestral_chain_samples_the_posterior_of_the_noised_point(strength):
    s = NoiseSchedule.from_name("cosine", 1000)
    z0 = 2.5  # far from the data's mean, so that how much of it survives shows
    timesteps = sampling_timesteps(1000, 1000)
    alpha_bar = s.alphas_cumprod[timesteps[-round(strength * 1000)]].item()
    k, posterior_var = posterior_given_xt(alpha_bar)
    # x_t | z0 ~ N(√ᾱ z0, 1 - ᾱ); x_0 | x_t from the posterior: the mixture's moments
    mean = MEAN + k * alpha_bar ** 0.5 * (z0 - MEAN)
    std = (k ** 2 * (1 - alpha_bar) + posterior_var) ** 0.5
    x = ddpm_sample(oracle_eps(s), s, (N, 1), steps=1000, generator=torch.Generator().manual_seed(0),
                    edit=Edit(torch.full((N, 1), z0), strength))
    assert abs(x.mean().item() - mean) < 6 * std / N ** 0.5 + 0.005
    assert abs(x.std().item() / std - 1) < 0.02


def test_sdedit_with_the_deterministic_chain_is_the_flow_map_of_the_noised_point():
    """The probability-flow ODE maps N(√ᾱ m, V) onto N(m, s²) linearly: x_0 = m + (s/√V)(x_t - √ᾱ m)."""
    s = NoiseSchedule.from_name("cosine", 1000)
    z0, strength = 2.5, 0.5
    alpha_bar = s.alphas_cumprod[sampling_timesteps(1000, 1000)[-500]].item()
    gain = STD / (alpha_bar * STD ** 2 + 1 - alpha_bar) ** 0.5
    x = ddim_sample(oracle_eps(s), s, (N, 1), steps=1000, generator=torch.Generator().manual_seed(0),
                    edit=Edit(torch.full((N, 1), z0), strength))
    mean, std = MEAN + gain * alpha_bar ** 0.5 * (z0 - MEAN), gain * (1 - alpha_bar) ** 0.5
    assert abs(x.mean().item() - mean) < 6 * std / N ** 0.5 + 0.005
    assert abs(x.std().item() / std - 1) < 0.02


@pytest.mark.parametrize("config", [SamplerConfig("ddpm", 20), SamplerConfig("ddim", 20, eta=0.5),
                                    SamplerConfig("dpm++2m", 10), SamplerConfig("dpm++2m", 10, eta=1.0),
                                    SamplerConfig("langevin", 10)], ids=lambda c: c.label)
def test_strength_one_is_plain_sampling_and_zero_the_given_latents(config):
    s = NoiseSchedule.from_name("cosine", 1000)
    latents = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    run = lambda edit: config.run(oracle_eps(s), s, (64, 2), generator=torch.Generator().manual_seed(3), edit=edit)
    assert torch.equal(run(Edit(latents, 1.0)), run(None))
    assert torch.equal(run(Edit(latents, 0.0)), latents)
    half = run(Edit(latents, 0.5))
    assert not torch.equal(half, latents) and not torch.equal(half, run(None))


def two_dim_oracle(schedule: NoiseSchedule, rho: float):
    """E[ε | x_t] for x_0 ~ N((m, m), Σ), Σ = STD² [[1, ρ], [ρ, 1]]: √(1-ᾱ) Σ_t⁻¹ (x_t - √ᾱ m),
    Σ_t = ᾱ Σ + (1 - ᾱ) I."""
    cov = STD ** 2 * torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    a = schedule.alphas_cumprod.double()
    inverses = torch.linalg.inv(a[:, None, None] * cov + (1 - a[:, None, None]) * torch.eye(2, dtype=torch.float64))

    def model(x, t):
        a_t = a[t[0]]
        return ((1 - a_t).sqrt() * (x.double() - a_t.sqrt() * MEAN) @ inverses[t[0]]).float()
    return model


@pytest.mark.slow
def test_repaint_samples_the_conditional_of_the_generated_coordinate_and_replacement_alone_does_not():
    """Keep x_1 = c of a correlated 2-D Gaussian and generate x_2: the exact answer is
    N(m + ρ (c - m), STD² (1 - ρ²)). Replacing the kept coordinate at every step (resample 1)
    leaves x_2 pulled towards its unconditional mean m (RePaint, section 4.2); resampling each step
    brings it to the conditional."""
    s, rho, c, n = NoiseSchedule.from_name("cosine", 1000), 0.8, 2.0, 5000
    mean, std = MEAN + rho * (c - MEAN), STD * (1 - rho ** 2) ** 0.5
    mask = torch.tensor([[True, False]]).expand(n, 2)

    def inpaint(resample):
        return ddpm_sample(two_dim_oracle(s, rho), s, (n, 2), steps=1000, generator=torch.Generator().manual_seed(0),
                           edit=Edit(torch.full((n, 2), c), mask=mask, resample=resample))

    replaced, resampled = inpaint(1), inpaint(20)
    assert (replaced[:, 0] == c).all() and (resampled[:, 0] == c).all()
    assert mean - replaced[:, 1].mean().item() > 0.25 * rho * (c - MEAN)  # a quarter of the shift and more is lost
    assert abs(resampled[:, 1].mean().item() - mean) < 0.05 * rho * (c - MEAN)
    assert abs(resampled[:, 1].std().item() / std - 1) < 0.05


def test_edit_settings_are_refused_where_defined():
    latents = torch.zeros(2, 4, 7, 7)
    for strength in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(ConfigError, match="strength"):
            Edit(latents, strength)
    with pytest.raises(ConfigError, match="resample"):
        Edit(latents, resample=0)
    with pytest.raises(ConfigError, match="only inpainting"):
        Edit(latents, resample=3)
    with pytest.raises(ConfigError, match="latents"):
        Edit(None, 0.5)
    with pytest.raises(ConfigError, match="already iterates"):
        SamplerConfig("langevin", 5).run(lambda x, t: x, NoiseSchedule.from_name("cosine", 1000), (2, 4, 7, 7),
                                         edit=Edit(latents, mask=torch.ones(2, 1, 7, 7, dtype=torch.bool), resample=2))


def test_a_latent_position_is_kept_when_at_least_half_its_block_of_pixels_is():
    mask = torch.ones(1, 1, 28, 28, dtype=torch.bool)
    mask[0, 0, 4:7, 8:12] = False  # 12 of the 16 pixels of block (1, 2)
    mask[0, 0, 8:10, 0:4] = False  # 8 of block (2, 0): half kept
    mask[0, 0, 12:13, 4:6] = False  # 2 of block (3, 1)
    mask[0, 0, 24:, :] = False  # the bottom row of blocks
    expected = torch.ones(1, 1, 7, 7, dtype=torch.bool)
    expected[0, 0, 1, 2] = False
    expected[0, 0, 6, :] = False
    assert torch.equal(latent_mask(mask), expected)
    top = torch.zeros(1, 1, 28, 28, dtype=torch.bool)
    top[..., :14, :] = True  # 14 rows: the block they cut in half is kept
    assert latent_mask(top)[0, 0, :, 0].tolist() == [True] * 4 + [False] * 3


def test_images_and_masks_are_taken_in_every_usual_form_and_refused_otherwise():
    pixels = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    as_float = pixels.float()[:, None] / 255
    for form in (pixels, pixels[:, None], pixels.numpy(), as_float, as_float.numpy()):
        assert torch.equal(as_images(form), as_float)
    assert as_images(pixels[0]).shape == (1, 1, 28, 28)
    pictures = [Image.fromarray(p.numpy(), mode="L") for p in pixels]
    assert torch.equal(as_images(pictures), as_float) and torch.equal(as_images(pictures[0]), as_float[:1])
    with pytest.raises(ConfigError, match="greyscale"):
        as_images(Image.new("RGB", (28, 28)))
    for bad in (None, "digit.png", {"a": 1}):
        with pytest.raises(ConfigError, match="must be a tensor, an array or greyscale PIL images"):
            as_images(bad)
    with pytest.raises(ConfigError, match="mask"):
        as_mask(None, 3)
    for bad, match in ((torch.zeros(3, 28, 27), "greyscale 28 x 28"), (torch.zeros(2, 3, 28, 28), "greyscale"),
                       (torch.zeros(0, 28, 28), "N >= 1"), (torch.full((1, 28, 28), 1.5), "outside"),
                       (torch.full((1, 28, 28), float("nan")), "outside"), (torch.zeros(1, 28, 28, dtype=torch.int64),
                                                                             "uint8")):
        with pytest.raises(ConfigError, match=match):
            as_images(bad)
    one = torch.zeros(28, 28, dtype=torch.bool)
    one[:14] = True
    assert torch.equal(as_mask(one, 3), one.expand(3, 1, 28, 28))
    assert torch.equal(as_mask(one.int(), 3), as_mask(one, 3))
    for bad, match in ((torch.full((28, 28), 0.5), "other than 0 and 1"), (torch.ones(2, 28, 28), "one per image"),
                       (torch.ones(14, 28), "28 x 28")):
        with pytest.raises(ConfigError, match=match):
            as_mask(bad, 3)


def test_slerp_keeps_its_ends_and_walks_the_great_circle():
    a, b = torch.zeros(2, 2), torch.zeros(2, 2)
    a[0, 0], b[1, 1] = 3.0, 3.0  # orthogonal, of equal norm
    weights = torch.linspace(0, 1, 7, dtype=torch.float64)
    frames = slerp(a, b, weights)
    assert torch.equal(frames[0], a) and torch.equal(frames[-1], b)
    for w, frame in zip(weights.tolist(), frames):
        expected = math.cos(w * math.pi / 2) * a + math.sin(w * math.pi / 2) * b
        assert torch.allclose(frame, expected, atol=1e-6)
        assert frame.norm().item() == pytest.approx(3.0, rel=1e-6)
    assert torch.allclose(slerp(a, a, weights), a.expand(7, 2, 2))  # parallel: no angle to walk


def test_mixed_labels_embed_as_the_mix_of_their_entries_and_one_hot_ones_exactly_as_the_index():
    torch.manual_seed(0)
    embedding = LabelEmbedding(10, 8)
    labels = torch.tensor([3, 10, 7])
    one_hot = torch.nn.functional.one_hot(labels, 11).float()
    assert torch.equal(embedding(one_hot, 3), embedding(labels, 3))
    half = 0.5 * one_hot[0] + 0.5 * one_hot[2]
    assert torch.allclose(embedding(half[None], 1)[0], 0.5 * (embedding.embed.weight[3] + embedding.embed.weight[7]))
    # classifier-free guidance of mixed labels pairs them with the "no label" entry
    seen = []
    model = lambda x, t, y: (seen.append(y), x * 0 + embedding(y, len(x)).sum(dim=1, keepdim=True))[1]
    x, t = torch.zeros(3, 1), torch.zeros(3, dtype=torch.long)
    assert torch.equal(guided_model(model, one_hot, 2.0, 10)(x, t), guided_model(model, labels, 2.0, 10)(x, t))
    assert torch.equal(seen[0][3:], torch.nn.functional.one_hot(torch.full((3,), 10), 11).float())


def test_resampled_steps_of_the_multistep_solver_are_first_order():
    """Once x is re-noised its solver history belongs to another trajectory: with resampling,
    DPM-Solver++(2M) steps are DDIM's (its first order) with the same kept latents."""
    s = NoiseSchedule.from_name("cosine", 1000)
    mask = torch.tensor([[True, False]]).expand(256, 2)
    edit = Edit(torch.full((256, 2), 1.5), mask=mask, resample=2)
    run = lambda config: config.run(two_dim_oracle(s, 0.5), s, (256, 2), generator=torch.Generator().manual_seed(4),
                                    edit=edit)
    assert np.allclose(run(SamplerConfig("dpm++2m", 10, spacing="time")).numpy(),
                       run(SamplerConfig("ddim", 10)).numpy(), atol=1e-6)

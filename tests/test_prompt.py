"""The Prompt: parsed, defaulted and validated once, naming itself, turning into labels; and the
prompt reaching the UNet through the pipeline (another digit with the same noise gives another
image; guidance 1 is the conditional model alone)."""

import warnings

import pytest
import torch

from ldm.data import NUM_CLASSES
from ldm.diffusion import Diffusion, DiffusionConfig
from ldm.errors import ConfigError, LdmError
from ldm.pipeline import LatentDiffusion
from ldm.prompt import GUIDED_AUTOGUIDANCE, GUIDED_PROMPT_GUIDANCE, PROMPT_GUIDANCE, PROMPT_GUIDANCE_INTERVAL, Prompt
from ldm.samples import load_samples, samples_info, save_samples
from ldm.sampling import SamplerConfig
from ldm.unet import UNet, UNetConfig
from ldm.vae import VAE, VAEConfig


def test_a_prompt_is_parsed_and_defaulted_once():
    assert Prompt("7") == Prompt(7) == Prompt(7, PROMPT_GUIDANCE, PROMPT_GUIDANCE_INTERVAL)
    # the default guidance is a scale on an interval; a scale given alone guides every step
    assert Prompt(7).guidance_interval == PROMPT_GUIDANCE_INTERVAL and Prompt(7, 2).guidance_interval is None
    assert Prompt(7, None, (-1, 3)).guidance_interval == (-1.0, 3.0) and Prompt(7, None, (-1, 3)).guidance == PROMPT_GUIDANCE
    assert Prompt().digit == "any" and Prompt().guidance == 1.0
    assert Prompt("all").guidance == PROMPT_GUIDANCE and Prompt("all", 0).guidance == 0.0
    assert Prompt("none").guidance is None and Prompt("none").scale == 1.0
    assert Prompt.for_model(None, None, conditional=True) == Prompt("any")
    assert Prompt.for_model(None, None, conditional=False) == Prompt("none")
    with pytest.raises(LdmError, match="unconditional"):
        Prompt.for_model(3, None, conditional=False)


@pytest.mark.parametrize("digit, guidance, field", [
    (10, None, "digit"), ("seven", None, "digit"), (-1, None, "digit"), (3.5, None, "digit"),
    (3, -0.5, "guidance"), (3, float("inf"), "guidance"), (3, float("nan"), "guidance"), ("any", "2", "guidance")])
def test_a_prompt_outside_its_domain_is_refused_naming_the_field(digit, guidance, field):
    with pytest.raises(ConfigError) as error:
        Prompt(digit, guidance)
    assert error.value.field == field


def test_a_model_with_a_guide_fills_unset_settings_with_the_guided_defaults():
    def guided(digit, guidance=None, interval=None, autoguidance=None):
        return Prompt.for_model(digit, guidance, True, interval, autoguidance, guided=True)
    assert guided("none") == Prompt("none", autoguidance=GUIDED_AUTOGUIDANCE["none"])
    assert guided(None) == Prompt("any", autoguidance=GUIDED_AUTOGUIDANCE["any"])
    for digit in ("all", 7, "7"):
        assert guided(digit) == Prompt(digit, GUIDED_PROMPT_GUIDANCE, PROMPT_GUIDANCE_INTERVAL,
                                       GUIDED_AUTOGUIDANCE["digits"])
    # what is given is kept: a scale alone guides every step, as without a guide
    assert guided(3, 2.0, None, 1.0) == Prompt(3, 2.0, None, 1.0)
    assert Prompt.for_model("all", None, True) == Prompt("all")  # no guide: the plain defaults


@pytest.mark.parametrize("weight", [0.5, -1.0, float("inf"), float("nan"), "2"])
def test_an_autoguidance_weight_below_one_or_not_a_number_is_refused(weight):
    with pytest.raises(ConfigError) as error:
        Prompt("none", autoguidance=weight)
    assert error.value.field == "autoguidance"


def test_an_unusual_or_ignored_guidance_is_one_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Prompt(3, 25.0)
        Prompt("none", 2.0)
        Prompt(3, 20.0)
    assert [str(w.message).split(" ")[:2] for w in caught] == [["guidance", "25"], ["guidance", "2"]]


def test_a_prompt_names_itself():
    assert [Prompt("any").name(), Prompt("any", 2).name(), Prompt("all").name(), Prompt(7, 2).name(),
            Prompt(7, 2, (-2, 1.5)).name(), Prompt("none").name(), Prompt("none").name(conditional=False),
            Prompt("none", autoguidance=1.25).name(), Prompt("none", autoguidance=2).name(conditional=False),
            Prompt("any", autoguidance=1.5).name(), Prompt(7, 2, autoguidance=1.5).name()] == [
        "random digits", "random digits, guidance 2",
        f"digits 0-9, guidance {PROMPT_GUIDANCE:g} at λ {PROMPT_GUIDANCE_INTERVAL[0]:g}..{PROMPT_GUIDANCE_INTERVAL[1]:g}",
        "digit 7, guidance 2", "digit 7, guidance 2 at λ -2..1.5", "no label", "",
        "no label, autoguidance 1.25", "autoguidance 2", "random digits, autoguidance 1.5",
        "digit 7, guidance 2, autoguidance 1.5"]


@pytest.mark.parametrize("interval", [(1.0,), (1.0, 2.0, 3.0), (2.0, 1.0), (1.0, 1.0), (0.0, float("inf")),
                                      ("a", 1.0), 3.0])
def test_a_guidance_interval_must_be_two_finite_increasing_numbers(interval):
    with pytest.raises(ConfigError) as error:
        Prompt(3, 2.0, interval)
    assert error.value.field == "guidance_interval"


def test_a_guidance_interval_of_an_unguided_prompt_is_one_warning_and_dropped():
    assert Prompt(3, 2.0, [-1, 2]).guidance_interval == (-1.0, 2.0)
    for digit, guidance in (("any", None), (3, 1.0), ("none", None)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert Prompt(digit, guidance, (-1, 2)).guidance_interval is None
        assert [str(w.message).split(":")[0] for w in caught] == ["guidance interval ignored"]


def test_a_prompt_turns_into_labels():
    frequencies = [0.0] * 9 + [1.0]
    assert Prompt("none").labels(5, 0, frequencies) is None
    assert Prompt(4).labels(3, 0, frequencies).tolist() == [4, 4, 4]
    assert Prompt("all").labels(12, 0, frequencies).tolist() == [*range(10), 0, 1]
    assert Prompt("any").labels(50, 0, frequencies).tolist() == [9] * 50  # only 9 has any weight
    drawn = [Prompt("any").labels(8, seed, [0.1] * 10).tolist() for seed in (0, 0, 1)]
    assert drawn[0] == drawn[1] != drawn[2]
    with pytest.raises(LdmError, match="no label frequencies"):
        Prompt("any").labels(2, 0, None)


def tiny_pipeline() -> LatentDiffusion:
    """A class-conditional UNet with random (non-zero) weights, so that its output depends on
    everything it is given, and a VAE to decode."""
    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=2, base_channels=8, num_res_blocks=1, num_classes=NUM_CLASSES)).eval()
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.2)
    vae = VAE(VAEConfig(latent_channels=2, channels=(8, 8))).eval()
    return LatentDiffusion(unet, vae, Diffusion(DiffusionConfig()), 1.0, [0.1] * NUM_CLASSES)


def test_the_prompt_reaches_the_unet():
    pipe, sampler = tiny_pipeline(), SamplerConfig("ddim", 3)
    threes, fours = (pipe.sample_latents(4, sampler, labels=torch.full((4,), d), generator=torch.Generator()
                                         .manual_seed(0)) for d in (3, 4))
    assert not torch.allclose(threes, fours)  # the same noise, another digit: another sample
    # guidance 1 is the conditional model alone: the guided sampler equals one that calls the UNet
    # with the labels directly
    labels = torch.full((4,), 3)
    guided = pipe.sample_latents(4, sampler, labels=labels, guidance=1.0, generator=torch.Generator().manual_seed(0))
    direct = sampler.run(lambda x, t: pipe.diffusion.schedule.eps_from_velocity(x, t, pipe.unet(x, t, labels)),
                         pipe.diffusion.schedule, (4, 2, 7, 7), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(guided, direct, rtol=0, atol=0)
    # and the pipeline's own door: images of two digits from one seed differ
    assert not torch.equal(pipe(4, digit=3, sampler="ddim", steps=3), pipe(4, digit=4, sampler="ddim", steps=3))


def test_autoguidance_needs_a_guide_changes_the_samples_and_travels_with_them(tmp_path):
    pipe, sampler = tiny_pipeline(), SamplerConfig("ddim", 3)
    with pytest.raises(ConfigError, match="needs a guide"):
        pipe.prompt("none", autoguidance=1.5)
    plain = pipe.sample(4, sampler, Prompt("none"))
    pipe.guide = pipe.unet  # guided by itself: D + w (D - D) = D, exactly
    assert torch.equal(pipe.sample(4, sampler, Prompt("none", autoguidance=3.0)), plain)
    torch.manual_seed(1)
    pipe.guide = UNet(pipe.unet.config).eval()
    for p in pipe.guide.parameters():
        torch.nn.init.normal_(p, std=0.2)
    prompt = pipe.prompt("none", autoguidance=1.5)
    guided = pipe.sample(4, sampler, prompt)
    assert not torch.equal(guided, plain)
    assert torch.equal(pipe.sample(4, sampler, Prompt("none", autoguidance=1.0)), plain)
    assert torch.equal(guided, pipe(4, digit="none", autoguidance=1.5, sampler="ddim", steps=3))
    save_samples(tmp_path / "s.safetensors", guided, None, samples_info(sampler, prompt, True, vae_fingerprint="v"))
    assert load_samples(tmp_path / "s.safetensors").name == "DDIM-3, no label, autoguidance 1.5"


def test_reading_samples_of_an_unusual_scale_is_quiet(tmp_path):
    """The warning about a scale above 20 is given when the samples are made, not again each time
    the file is read (evaluate reads it twice: to check it and to name its row)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prompt = Prompt(3, 25.0)
    info = samples_info(SamplerConfig(), prompt, True, vae_fingerprint="v")
    save_samples(tmp_path / "s.safetensors", torch.zeros(2, 28, 28, dtype=torch.uint8), prompt.labels(2, 0, None), info)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = load_samples(tmp_path / "s.safetensors")
    assert caught == [] and samples.name == "DPM++2M-10, digit 3, guidance 25"


def test_a_guidance_interval_travels_with_the_samples(tmp_path):
    prompt = Prompt("all", 2.0, (-2.0, 1.0))
    info = samples_info(SamplerConfig(), prompt, True, vae_fingerprint="v")
    save_samples(tmp_path / "s.safetensors", torch.zeros(10, 28, 28, dtype=torch.uint8), prompt.labels(10, 0, None),
                 info)
    assert load_samples(tmp_path / "s.safetensors").name == "DPM++2M-10, digits 0-9, guidance 2 at λ -2..1"
    pipe, sampler = tiny_pipeline(), SamplerConfig("ddim", 3)
    guided = pipe.sample(4, sampler, prompt)
    assert not torch.equal(guided, pipe.sample(4, sampler, Prompt("all", 2.0)))
    assert torch.equal(guided, pipe(4, digit="all", guidance=2.0, guidance_interval=(-2, 1), sampler="ddim", steps=3))

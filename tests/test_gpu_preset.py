"""The `gpu` preset, exercised on the CPU: its models' configs and shapes train and sample, and
the bf16 autocast its denoiser runs in on CUDA works and agrees with full precision."""

import dataclasses

import torch

from ldm import utils
from ldm.checkpoint import load_model
from ldm.diffusion import Diffusion
from ldm.latents import LatentCache
from ldm.presets import PRESETS
from ldm.stages import train_classifier, train_unet, train_vae
from ldm.vae import VAE

CPU = torch.device("cpu")


def two_steps(settings):
    """The preset's optimisation settings, for two steps of a batch small enough for a test."""
    return dataclasses.replace(settings, steps=2, batch_size=8)


def test_gpu_preset_trains_and_samples_on_the_cpu_in_bf16(tmp_path, monkeypatch):
    gpu = PRESETS["gpu"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    train_classifier((images, labels), (images[:8], labels[:8]), two_steps(gpu.classifier), tmp_path / "c.safetensors",
                     seed=0, device=CPU, progress=False)
    train_vae(images, images, gpu.vae_model, two_steps(gpu.vae), tmp_path / "v.safetensors", tmp_path / "v.png",
              seed=0, device=CPU, progress=False)
    vae, vae_ckpt = load_model(tmp_path / "v.safetensors", VAE, CPU)
    assert vae.config == gpu.vae_model
    cache = LatentCache.encode(vae, vae_ckpt.fingerprint, (images, labels), (images[:8], labels[:8]), CPU, {})

    monkeypatch.setitem(utils.AUTOCAST_DTYPES, "cpu", torch.bfloat16)  # what CUDA runs
    ema, raw, info = train_unet(cache, gpu.unet_model, gpu.diffusion, two_steps(gpu.unet), seed=0, device=CPU,
                                progress=False)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in raw.parameters())  # fp32 weights
    assert torch.isfinite(torch.tensor(info["final_loss"]["loss"]))
    dtypes = set()
    ema.input_conv.register_forward_hook(lambda module, args, output: dtypes.add(output.dtype))

    def sample():
        shape, prompts = (4, *vae.latent_shape), torch.arange(4)
        z = Diffusion(gpu.diffusion).sample(ema, shape, gpu.sampler("ddim", 3), labels=prompts, guidance=1.5,
                                            num_classes=10, generator=torch.Generator().manual_seed(0))
        return vae.decode(z.float() / cache.scale_factor)

    with torch.no_grad():
        bf16 = sample()
        assert dtypes == {torch.bfloat16}
        monkeypatch.delitem(utils.AUTOCAST_DTYPES, "cpu")
        dtypes.clear()
        fp32 = sample()
        assert dtypes == {torch.float32}
    assert bf16.shape == (4, 1, 28, 28) and torch.isfinite(bf16).all()
    # bf16 keeps 8 bits of mantissa: the same images to within a few grey levels
    assert (bf16 - fp32).abs().mean() < 0.02, (bf16 - fp32).abs().mean()

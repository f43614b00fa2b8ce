"""Stage 5: sample latents from noise with DDPM or DDIM, decode them through the VAE, and write
the images as a safetensors file ([N x 28 x 28] uint8, plus the prompted labels) and a PNG grid
(the first 64, or with --digit all one row per digit).

Unprompted samples of a class-conditional UNet prompt each image with a digit drawn from the
training set's label frequencies, at guidance 1: that samples p(x) = Σ_y p(y) p(x | y) through the
conditional branch; --digit none samples the "no label" branch instead.

    python -m scripts.sample --sampler ddim --steps 50 --num-samples 64 --out checkpoints/samples.safetensors
    python -m scripts.sample --sampler ddpm --variance beta --num-samples 10000 --seed 1
    python -m scripts.sample --digit 7 --guidance 2.0 --out checkpoints/sevens.safetensors
    python -m scripts.sample --digit all --num-samples 100 --out reports/digits.safetensors
    python -m scripts.sample --digit none --num-samples 64 --out checkpoints/no_label.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ldm.checkpoint import save_checkpoint
from ldm.cli import (StageParser, add_compile_arg, add_device_args, add_preset_arg, non_negative_float, positive_int,
                     run)
from ldm.data import to_float
from ldm.images import digit_rows, save_grid, save_rows
from ldm.pipeline import LatentDiffusion
from ldm.presets import get_preset
from ldm.sampling import SAMPLERS, VARIANCES
from ldm.utils import LdmError, check_writable, resolve_device


DIGIT_CHOICES = ("all", "any", "none")


def digit_prompt(text: str) -> int | str:
    if text in DIGIT_CHOICES:
        return text
    if text not in [str(d) for d in range(10)]:
        raise argparse.ArgumentTypeError(f"must be a digit 0-9, 'all', 'any' or 'none', got {text!r}")
    return int(text)


def prompt_label(digit: int | str, guidance: float, conditional: bool) -> str:
    """How the samples were prompted, as the report names them ("" for an unconditional UNet)."""
    if digit == "none":
        return ", no label" if conditional else ""
    prompt = {"all": "digits 0-9", "any": "random digits"}.get(digit, f"digit {digit}")
    return f", {prompt}" + ("" if digit == "any" and guidance == 1 else f", guidance {guidance:g}")


def main() -> None:
    parser = StageParser(__doc__)
    parser.add_argument("--unet", default="checkpoints/unet.safetensors", help="diffusion checkpoint")
    parser.add_argument("--vae", default="checkpoints/vae.safetensors", help="VAE checkpoint (decoder)")
    parser.add_argument("--weights", default="ema", choices=["ema", "raw"], help="which UNet weights to sample with")
    add_preset_arg(parser)
    # Sampler
    parser.add_argument("--sampler", default="ddim", choices=SAMPLERS,
                        help="ancestral DDPM, DDIM, or annealed Langevin dynamics (10 updates per noise level)")
    parser.add_argument("--steps", type=positive_int,
                        help="denoising steps or Langevin noise levels (unset: the preset's; "
                             "DDPM with fewer than T steps is respaced)")
    parser.add_argument("--eta", type=non_negative_float, default=0.0, help="DDIM noise scale: 0 deterministic, 1 = DDPM")
    parser.add_argument("--variance", default="beta_tilde", choices=VARIANCES, help="DDPM step variance σ²")
    # Prompt
    parser.add_argument("--digit", type=digit_prompt,
                        help="a digit 0-9; 'all' for the digits in turn; 'any' for digits drawn from the "
                             "training label frequencies (the default of a class-conditional UNet); 'none' for "
                             "the \"no label\" branch")
    parser.add_argument("--guidance", type=non_negative_float,
                        help="classifier-free guidance scale: 0 unconditional, 1 conditional, >1 guided "
                             "(unset: 1 for --digit any, else the preset's)")
    # Output
    parser.add_argument("--num-samples", type=positive_int, default=64, help="images to generate")
    parser.add_argument("--batch-size", type=positive_int, help="images per sampling batch (unset: the preset's)")
    parser.add_argument("--out", default="checkpoints/samples.safetensors",
                        help="images written here, and a grid of the first 64 beside it as .png")
    parser.add_argument("--strip", action="store_true",
                        help="also write <out>_process.png: x̂_0 across the chain for 8 samples, one row each")
    add_device_args(parser)
    add_compile_arg(parser)
    args = parser.parse_args()

    device = resolve_device(args.device)
    preset = get_preset(args.preset, device)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise LdmError(f"--out {out}: must end in .safetensors")
    check_writable(out)
    model = LatentDiffusion.load(args.unet, args.vae, device, args.weights, compile=args.compile)
    steps = args.steps or (preset.ddpm_steps if args.sampler == "ddpm" else preset.ddim_steps)
    if steps > model.schedule.num_timesteps:
        raise LdmError(f"--steps {steps}: at most T = {model.schedule.num_timesteps}")
    digit = args.digit if args.digit is not None else "any" if model.num_classes else "none"
    if args.guidance is not None:
        guidance = args.guidance
    else:
        guidance = 1.0 if digit == "any" else preset.guidance
    if digit == "none":
        labels = None
    elif digit == "any":
        labels = model.draw_labels(args.num_samples, args.seed)
    elif digit == "all":
        labels = torch.arange(args.num_samples) % 10
    else:
        labels = torch.full((args.num_samples,), digit)
    start = time.time()
    sampler_args = dict(sampler=args.sampler, steps=steps, eta=args.eta, variance=args.variance, guidance=guidance)
    images = model.sample(args.num_samples, labels=labels, seed=args.seed,
                          batch_size=args.batch_size or preset.sample_batch_size, progress=not args.no_progress,
                          **sampler_args)
    seconds = time.time() - start
    label = {"ddpm": f"DDPM-{steps}" + (" σ²=β" if args.variance == "beta" else ""),
             "ddim": f"DDIM-{steps}" + (f" η={args.eta:g}" if args.eta else ""),
             "langevin": f"Langevin-{steps}"}[args.sampler]
    label += prompt_label(digit, guidance, conditional=bool(model.num_classes))
    info = {"label": label, "sampler": args.sampler, "steps": steps, "eta": args.eta, "variance": args.variance,
            "digit": digit, "guidance": guidance if labels is not None else None,
            "seed": args.seed, "weights": args.weights, "unet_fingerprint": model.unet_ckpt.fingerprint,
            "vae_fingerprint": model.vae_ckpt.fingerprint, "seconds": seconds, "device": str(device),
            "compiled": args.compile}
    tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
    save_checkpoint(out, tensors, "samples", info=info)
    per_digit = min(10, args.num_samples // 10)
    if digit == "all" and per_digit:
        save_rows(digit_rows(images, labels, per_digit), out.with_suffix(".png"))
    else:
        save_grid(to_float(images[:64]), out.with_suffix(".png"), nrow=8)
    if args.strip:
        strip_labels = None if labels is None else labels[:8]
        strip = model.denoising_strip(min(8, args.num_samples), seed=args.seed, labels=strip_labels, **sampler_args)
        save_rows(strip, out.with_name(f"{out.stem}_process.png"))
        print(f"wrote {out.with_name(f'{out.stem}_process.png')} (x̂_0 at 10 points of the chain, then the sample)")
    print(f"{label}: {len(images)} images in {seconds:.1f}s ({len(images) / seconds:.1f} images/s on {device}); "
          f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    run(main)

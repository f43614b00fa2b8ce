"""Stage 5: sample latents from noise with DPM-Solver++(2M) (the default: 10 steps in log-SNR),
DDIM, DDPM or Langevin dynamics, decode them through the VAE, and write the images as a
safetensors file ([N x 28 x 28] uint8, plus the prompted labels) and a PNG grid (the first 64, or
with --digit all one row per digit).

Unprompted samples of a class-conditional UNet prompt each image with a digit drawn from the
training set's label frequencies, at guidance 1: that samples p(x) = Σ_y p(y) p(x | y) through the
conditional branch; --digit none samples the "no label" branch instead.

    python -m scripts.sample --num-samples 64 --out checkpoints/samples.safetensors
    python -m scripts.sample --sampler ddim --steps 50 --num-samples 64 --out checkpoints/ddim.safetensors
    python -m scripts.sample --sampler dpm++2m --steps 5 --spacing time --out checkpoints/fast.safetensors
    python -m scripts.sample --sampler ddpm --variance beta --num-samples 10000 --seed 1
    python -m scripts.sample --digit 7 --guidance 2.0 --out checkpoints/sevens.safetensors
    python -m scripts.sample --digit all --num-samples 100 --out reports/digits.safetensors
    python -m scripts.sample --digit none --num-samples 64 --out checkpoints/no_label.safetensors
"""

from __future__ import annotations

import time
from pathlib import Path

from ldm import distributed
from ldm.cli import (StageParser, add_checkpoint_args, add_prompt_args, add_sampler_args, add_unet_runtime_args,
                     check_outputs, positive_int, run_context)
from ldm.data import SAMPLE_BYTES
from ldm.errors import LdmError
from ldm.images import digit_rows, save_grid, save_rows
from ldm.launch import run
from ldm.outputs import check_disk_space, written_together
from ldm.pipeline import BATCH_SIZE, WEIGHTS, LatentDiffusion, resolve_guide
from ldm.samples import row_name, samples_info, save_samples
from ldm.sampling import SamplerConfig


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_checkpoint_args(parser, "unet", "vae")
    parser.add_argument("--weights", default="ema", help=f"which UNet weights to sample with: {', '.join(WEIGHTS)}")
    add_sampler_args(parser)
    add_prompt_args(parser, "a digit 0-9; 'all' for the digits in turn; 'any' for digits drawn from the training label "
                            "frequencies (the default of a class-conditional UNet); 'none' for the \"no label\" branch")
    group = parser.add_argument_group("output")
    group.add_argument("--num-samples", dest="num_images", type=positive_int, default=64, help="images to generate")
    group.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                       help="images per sampling batch; each batch draws its own noise from the seed, so the "
                            "images depend on it")
    group.add_argument("--out", default="checkpoints/samples.safetensors",
                       help="images written here, and a grid of the first 64 beside it as .png")
    group.add_argument("--strip", action="store_true",
                       help="also write <out>_process.png: x̂_0 across the chain for 8 samples, one row each")
    add_unet_runtime_args(parser)
    return parser


def main(args) -> None:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise LdmError(f"--out {out}: must end in .safetensors")
    grid, strip_path = out.with_suffix(".png"), out.with_name(f"{out.stem}_process.png")
    args.guide = resolve_guide(args.unet, args.guide)  # a file, so that no output may replace it
    check_outputs(args, out, grid, *([strip_path] if args.strip else []))
    check_disk_space(out, args.num_images * SAMPLE_BYTES, f"{args.num_images} images and labels")
    context = run_context(args)
    model = LatentDiffusion.load(args.unet, args.vae, context.device, args.weights, compile=context.compile,
                                 guide_path=args.guide)
    prompt = model.prompt(args.digit, args.guidance, args.guidance_interval, args.autoguidance)
    sampler = SamplerConfig.for_branch(prompt.unconditional, args.sampler, args.steps, args.eta, args.variance,
                                       args.spacing)
    start = time.time()
    images = model.sample(args.num_images, sampler, prompt, seed=context.seed, batch_size=args.batch_size,
                          progress=context.progress)
    seconds = time.time() - start
    if not distributed.is_main():  # every rank holds all the images; rank 0 writes them
        return
    labels = prompt.labels(args.num_images, context.seed, model.label_frequencies)
    conditional = bool(model.num_classes)
    info = samples_info(sampler, prompt, conditional, seed=context.seed, weights=args.weights,
                        **model.fingerprints,
                        device=str(context.device), compiled=context.compile)  # no timings: the file depends on the command alone
    with written_together() as outputs:  # the samples and their pictures appear together, or none of them
        save_samples(out, images, labels, info, outputs)
        per_digit = min(10, args.num_images // 10)
        if prompt.digit == "all" and per_digit:
            save_rows(digit_rows(images, labels, per_digit), grid, outputs)
        else:
            save_grid(images[:64], grid, nrow=8, outputs=outputs)
        if args.strip:
            strip = model.denoising_strip(min(8, args.num_images), sampler, prompt, seed=context.seed)
            save_rows(strip, strip_path, outputs)
    if args.strip:
        print(f"wrote {strip_path} (x̂_0 at 10 points of the chain, then the sample)")
    processes = distributed.world().size
    print(f"{row_name(sampler, prompt, conditional)}: {len(images)} images in {seconds:.1f}s "
          f"({len(images) / seconds:.1f} images/s on {context.device}"
          f"{f', {processes} processes' if processes > 1 else ''}); wrote {out} and {grid}")


if __name__ == "__main__":
    run(parser(), main)

"""Play with a trained model: image-to-image, inpainting and interpolation (ldm/editing.py), from
the checkpoints `make all` writes. Reads 28 x 28 greyscale PNGs (--images) or MNIST test images
(--test-index, from --data-dir); writes the results as a samples file (--out, [N x 28 x 28] uint8
with the prompted digits, and how they were made) and a PNG beside it: for img2img and inpaint a
row of inputs over a row of results, for interpolate one strip.

    img2img      each image's latent noised to --strength of the sampler's chain and denoised with
                 the prompt (SDEdit): 0 returns the VAE reconstruction, 1 plain sampling; with
                 --digit 8 the images turn into eights as the strength grows
    inpaint      keep each image where the mask is white (--mask PNG, or --keep top/bottom/left/right
                 for that half) and regenerate the rest (RePaint, --resample tries per step)
    interpolate  from the first sample of --seeds A and --digits A to that of B, their noise
                 interpolated spherically and their digits' embeddings linearly, --frames images

Unset --digit: img2img and inpaint sample the "no label" branch, which keeps an image's own digit;
interpolate, like plain sampling, draws each end's digit from its seed.

    python -m scripts.edit img2img --test-index 0 1 2 3 --strength 0.6 --digit 8 --out reports/eights.safetensors
    python -m scripts.edit inpaint --images my_digit.png --keep top --digit 7 --out reports/completed.safetensors
    python -m scripts.edit inpaint --test-index 5 --mask mask.png --out reports/inpainted.safetensors
    python -m scripts.edit interpolate --seeds 0 1 --digits 3 8 --frames 10 --out reports/three_to_eight.safetensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ldm.cli import (StageParser, add_checkpoint_args, add_data_arg, add_prompt_args, add_sampler_args,
                     add_unet_runtime_args, check_outputs, non_negative_int, positive_int, run_context)
from ldm.data import IMAGE_SIZE, load_mnist
from ldm.editing import HALVES, RESAMPLE, check_strength, half_mask
from ldm.errors import LdmError
from ldm.images import save_grid
from ldm.launch import run
from ldm.outputs import written_together
from ldm.pipeline import LatentDiffusion, resolve_guide
from ldm.samples import samples_info, save_samples
from ldm.sampling import SamplerConfig

MODES = ("img2img", "inpaint", "interpolate")
MODE_FLAGS = {"strength": "img2img", "mask": "inpaint", "keep": "inpaint", "resample": "inpaint",
              "seeds": "interpolate", "digits": "interpolate", "frames": "interpolate"}


def parser() -> StageParser:
    parser = StageParser(__doc__)
    parser.add_argument("mode", choices=MODES, help="what to do (above)")
    add_checkpoint_args(parser, "unet", "vae")
    group = parser.add_argument_group("input (img2img and inpaint)")
    group.add_argument("--images", nargs="+", metavar="PNG", help="28 x 28 greyscale PNGs, white digits on black")
    group.add_argument("--test-index", type=non_negative_int, nargs="+", metavar="I",
                       help="MNIST test images by index (from --data-dir)")
    add_data_arg(group)
    group.add_argument("--strength", type=float, default=0.6,
                       help="img2img: the share of the sampler's steps run from the noised image, in [0, 1]")
    group.add_argument("--mask", metavar="PNG", help="inpaint: a 28 x 28 greyscale PNG, white (255) where the images "
                                                     "are kept and black (0) where they are regenerated")
    group.add_argument("--keep", choices=HALVES, help="inpaint: keep this half of each image, regenerate the other")
    group.add_argument("--resample", type=positive_int, default=RESAMPLE,
                       help="inpaint: tries per step, re-noised between, so that the parts agree (RePaint)")
    group = parser.add_argument_group("interpolate")
    group.add_argument("--seeds", type=non_negative_int, nargs=2, default=[0, 1], metavar=("A", "B"),
                       help="the seeds of the two ends")
    group.add_argument("--digits", nargs=2, metavar=("A", "B"),
                       help="the digits of the two ends (unset: --digit at both)")
    group.add_argument("--frames", type=positive_int, default=10, help="images from one end to the other")
    add_sampler_args(parser, variance=False)
    add_prompt_args(parser, "a digit 0-9 to turn the images into or complete them as; 'all' for the digits in turn; "
                            "'any' for digits drawn from the training label frequencies (interpolate's default); "
                            "'none' (the default of img2img and inpaint) for the \"no label\" branch")
    group = parser.add_argument_group("output")
    group.add_argument("--out", default="reports/edit.safetensors", help="the results, and a PNG beside it")
    add_unet_runtime_args(parser)
    return parser


def read_png(path: str) -> torch.Tensor:
    """A 28 x 28 greyscale PNG as uint8 [28 x 28]; anything else is one LdmError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise LdmError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise LdmError(f"{path}: not a readable image ({e})") from None
    if image.mode not in ("L", "1"):
        raise LdmError(f"{path}: a {image.mode} image; expected greyscale (mode L), white digits on black")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        raise LdmError(f"{path}: {image.size[0]} x {image.size[1]} pixels; expected {IMAGE_SIZE} x {IMAGE_SIZE}")
    return torch.from_numpy(np.array(image.convert("L"), dtype=np.uint8))


def read_inputs(args) -> tuple[torch.Tensor, list[str]]:
    """The images to edit (uint8 [N x 28 x 28]) and how each was named."""
    if (args.images is None) == (args.test_index is None):
        raise LdmError(f"{args.mode} needs its images: give --images or --test-index (one of them)")
    if args.images is not None:
        return torch.stack([read_png(path) for path in args.images]), list(args.images)
    images, _ = load_mnist(args.data_dir, "test")
    beyond = [i for i in args.test_index if i >= len(images)]
    if beyond:
        raise LdmError(f"--test-index {beyond[0]}: the test set in {args.data_dir} has {len(images)} images "
                       f"(0..{len(images) - 1})")
    return images[args.test_index], [f"test image {i}" for i in args.test_index]


def read_mask(args) -> torch.Tensor:
    """bool [28 x 28], True where kept: --mask (white kept, black regenerated) or --keep (a half)."""
    if (args.mask is None) == (args.keep is None):
        raise LdmError("inpaint needs a mask: give --mask or --keep (one of them)")
    if args.keep is not None:
        return half_mask(args.keep)
    pixels = read_png(args.mask)
    if not ((pixels == 0) | (pixels == 255)).all():
        raise LdmError(f"--mask {args.mask}: holds grey pixels; expected white (255) where kept and black (0) where "
                       "regenerated")
    return pixels == 255


def check_mode_flags(args, parser: StageParser) -> None:
    """Refuse a flag of another mode (a typo would otherwise be ignored silently)."""
    defaults = {action.dest: action.default for action in parser._actions}
    for field, mode in MODE_FLAGS.items():
        if mode != args.mode and getattr(args, field) != defaults[field]:
            raise LdmError(f"{parser.flag_for(field)}: only for {mode}, not {args.mode}")
    if args.mode == "interpolate" and (args.images is not None or args.test_index is not None):
        raise LdmError("interpolate starts from noise: --images and --test-index are for img2img and inpaint")


def main(args) -> None:
    check_mode_flags(args, parser())
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise LdmError(f"--out {out}: must end in .safetensors")
    grid = out.with_suffix(".png")
    args.guide = resolve_guide(args.unet, args.guide)
    check_outputs(args, out, grid)
    if args.mode == "img2img":
        check_strength(args.strength)
    if args.mode != "interpolate":
        images, names = read_inputs(args)
        mask = read_mask(args) if args.mode == "inpaint" else None
    context = run_context(args)
    model = LatentDiffusion.load(args.unet, args.vae, context.device, compile=context.compile, guide_path=args.guide)
    settings = dict(guidance=args.guidance, guidance_interval=args.guidance_interval, autoguidance=args.autoguidance,
                    sampler=args.sampler, steps=args.steps, spacing=args.spacing)
    if args.mode == "interpolate":
        digits = args.digits or [args.digit, args.digit]
        results = model.interpolate(args.frames, seeds=tuple(args.seeds), digits=tuple(digits), **settings,
                                    progress=context.progress)
        prompt = model.prompt(digits[0], args.guidance, args.guidance_interval, args.autoguidance)
        sampler = SamplerConfig.for_branch(prompt.unconditional, args.sampler, args.steps, 0.0, spacing=args.spacing)
        nearer = [model.prompt(d).labels(1, seed, model.label_frequencies) for d, seed in zip(digits, args.seeds)]
        labels = None if nearer[0] is None else torch.cat([nearer[i >= args.frames / 2] for i in range(args.frames)])
        edit = {"mode": "interpolate", "seeds": list(args.seeds), "digits": [str(d) for d in digits]}
        picture = results
    else:
        kwargs = dict(strength=args.strength) if args.mode == "img2img" else dict(mask=mask, resample=args.resample)
        method = model.img2img if args.mode == "img2img" else model.inpaint
        results = method(images, digit=args.digit, eta=args.eta, **kwargs, **settings, seed=context.seed,
                         progress=context.progress)
        prompt, sampler = model.edit_settings(args.digit, args.guidance, args.guidance_interval, args.autoguidance,
                                               args.sampler, args.steps, args.eta, args.spacing)
        labels = prompt.labels(len(images), context.seed, model.label_frequencies)
        edit = {"mode": args.mode, "inputs": names,
                **({"strength": args.strength} if args.mode == "img2img" else
                   {"resample": args.resample, "kept_pixels": int(mask.sum())})}
        picture = torch.cat([images, results])  # the inputs in a row, the results below
    info = samples_info(sampler, prompt, bool(model.num_classes), seed=context.seed, edit=edit, **model.fingerprints)
    with written_together() as outputs:
        save_samples(out, results, labels, info, outputs)
        save_grid(picture, grid, nrow=len(results), outputs=outputs)
    print(f"{args.mode}: {len(results)} images; wrote {out} and {grid}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)

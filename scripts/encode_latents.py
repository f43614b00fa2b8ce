"""Stage 3: encode the training and test sets once into the latent cache.

Stores each image's posterior mean and log-variance and the scale factor that gives scaled
latents unit variance; the diffusion trainer samples z from these and never runs the encoder.

    python -m scripts.encode_latents --data-dir ../shared/data/mnist
"""

from __future__ import annotations

from ldm.checkpoint import load_model
from ldm.cli import StageParser, add_data_arg, add_runtime_args, check_outputs
from ldm.data import load_mnist_splits
from ldm.latents import LatentCache, save_latent_cache
from ldm.launch import run
from ldm.runtime import resolve_device
from ldm.vae import VAE


def parser() -> StageParser:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    parser.add_argument("--vae", default="checkpoints/vae.safetensors", help="VAE checkpoint")
    parser.add_argument("--out", default="checkpoints/latents.safetensors", help="latent cache written here")
    add_runtime_args(parser)
    return parser


def main(args) -> None:
    check_outputs(args, args.out)
    device = resolve_device(args.device)
    vae, vae_ckpt = load_model(args.vae, VAE, device)
    cache = LatentCache.encode(vae, vae_ckpt.fingerprint, *load_mnist_splits(args.data_dir), device,
                               info={"data_dir": args.data_dir, "vae_path": args.vae, "seed": args.seed},
                               progress=not args.no_progress)
    save_latent_cache(args.out, cache)
    print(f"encoded {len(cache.train_mean)} train and {len(cache.test_mean)} test images to latents of shape "
          f"{cache.latent_shape}; scale factor {cache.scale_factor:.4f}; wrote {args.out}")


if __name__ == "__main__":
    run(parser(), main, multiprocess=False)

"""Stage 3: encode the training and test sets once into the latent cache.

Stores each image's posterior mean and log-variance and the scale factor that gives scaled
latents unit variance; the diffusion trainer samples z from these and never runs the encoder.

    python -m scripts.encode_latents --data-dir ../shared/data/mnist
"""

from __future__ import annotations

from ldm.checkpoint import load_model
from ldm.cli import StageParser, add_data_arg, add_device_args, run
from ldm.data import load_mnist
from ldm.latents import LatentCache, encode_images, estimate_scale_factor, save_latent_cache
from ldm.utils import check_writable, resolve_device, set_seed
from ldm.vae import VAE


def main() -> None:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    parser.add_argument("--vae", default="checkpoints/vae.safetensors", help="VAE checkpoint")
    parser.add_argument("--out", default="checkpoints/latents.safetensors", help="latent cache written here")
    add_device_args(parser)
    args = parser.parse_args()

    check_writable(args.out)
    device = resolve_device(args.device)
    set_seed(args.seed)
    vae, vae_ckpt = load_model(args.vae, VAE, device)
    progress = not args.no_progress
    train_images, train_labels = load_mnist(args.data_dir, "train")
    test_images, test_labels = load_mnist(args.data_dir, "test")
    train_mean, train_logvar = encode_images(vae, train_images, device, progress=progress)
    test_mean, test_logvar = encode_images(vae, test_images, device, progress=progress)
    scale = estimate_scale_factor(train_mean, train_logvar)
    cache = LatentCache(train_mean, train_logvar, test_mean, test_logvar, train_labels.long(), test_labels.long(),
                        scale, vae_ckpt.fingerprint,
                        {"data_dir": args.data_dir, "vae_path": args.vae, "seed": args.seed})
    save_latent_cache(args.out, cache)
    print(f"encoded {len(train_mean)} train and {len(test_mean)} test images to latents of shape "
          f"{cache.latent_shape}; scale factor {scale:.4f}; wrote {args.out}")


if __name__ == "__main__":
    run(main)

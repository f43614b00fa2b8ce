"""Stage 2: train the convolutional VAE (loss = reconstruction BCE + β·KL).

    python -m scripts.train_vae --data-dir ../shared/data/mnist
    python -m scripts.train_vae --data-dir ../shared/data/mnist --preset smoke --out /tmp/v.safetensors  # seconds
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ldm.checkpoint import fingerprint, save_model
from ldm.cli import StageParser, add_data_arg, add_device_args, add_preset_arg, add_training_args, run
from ldm.data import BatchSampler, load_mnist, to_float
from ldm.images import save_grid
from ldm.presets import get_preset
from ldm.snapshot import Snapshot, snapshot_path
from ldm.train import run_training
from ldm.utils import check_writable, resolve_device, set_seed
from ldm.vae import VAE, vae_loss


@torch.no_grad()
def evaluate(vae: VAE, images: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Test-set reconstruction error (decoding the posterior mean) and the ELBO terms per image."""
    totals = {"recon_bce": 0.0, "kl": 0.0, "mse_per_pixel": 0.0}
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size])
        recon, kl = vae_loss(vae, x)
        mean, _ = vae.encode(x)
        totals["recon_bce"] += recon.item() * len(x)
        totals["kl"] += kl.item() * len(x)
        totals["mse_per_pixel"] += F.mse_loss(vae.decode(mean), x, reduction="sum").item() / x[0].numel()
    return {k: v / len(images) for k, v in totals.items()}


def main() -> None:
    parser = StageParser(__doc__)
    add_data_arg(parser)
    add_preset_arg(parser)
    add_training_args(parser, out="checkpoints/vae.safetensors", unit="images")
    parser.add_argument("--grid", default="reports/vae_reconstructions.png",
                        help="PNG of test images (odd rows) over their reconstructions (even rows)")
    add_device_args(parser)
    args = parser.parse_args()

    check_writable(args.out, args.grid)
    device = resolve_device(args.device)
    preset = get_preset(args.preset, device)
    steps, batch_size = args.steps or preset.vae.steps, args.batch_size or preset.vae.batch_size
    set_seed(args.seed)
    train_images, _ = load_mnist(args.data_dir, "train")
    test_images, _ = load_mnist(args.data_dir, "test")
    train_images, test_images = train_images.to(device), test_images.to(device)

    vae = VAE(preset.vae_model).to(device)
    sampler = BatchSampler(len(train_images), batch_size, args.seed)
    signature = {"stage": "vae", "steps": steps, "batch_size": batch_size, "lr": preset.vae.lr, "seed": args.seed,
                 "config": dataclasses.asdict(vae.config), "data": fingerprint({"images": train_images})}
    snapshot = Snapshot(snapshot_path(args.out), args.save_every, signature, sampler)

    def step_loss(step):
        recon, kl = vae_loss(vae, to_float(train_images[sampler.next().to(device)]))
        return recon + vae.config.beta * kl, {"recon": recon.detach(), "kl": kl.detach()}

    run_training(vae, step_loss, steps=steps, lr=preset.vae.lr, warmup_steps=min(preset.vae.warmup_steps, steps),
                 snapshot=snapshot, desc="vae", progress=not args.no_progress)
    metrics = evaluate(vae, test_images)
    print("vae test: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    with torch.no_grad():
        x = to_float(test_images[:32])
        recon = vae.decode(vae.encode(x)[0])
    save_grid(torch.stack([x[:16], recon[:16], x[16:], recon[16:]]).flatten(0, 1), args.grid, nrow=16)
    info = {"test": metrics, "steps": steps, "batch_size": batch_size, "seed": args.seed, "preset": preset.name,
            "data_dir": args.data_dir, "train_images": len(train_images), "vae_config": dataclasses.asdict(vae.config)}
    save_model(args.out, vae, info)
    print(f"wrote {args.out} and {args.grid}")


if __name__ == "__main__":
    run(main)

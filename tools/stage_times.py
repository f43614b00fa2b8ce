"""How long each stage of a `make all` took, read from when its outputs were written: make runs
the stages one after another, so each lasted from the previous stage's last output to its own.
Install starts when the virtual environment is created (.venv/pyvenv.cfg). Run it in the folder
`make all` ran in, after it finished and before anything else writes there.

    python tools/stage_times.py            (a markdown table of minutes per stage, and the total)
"""

import sys
from pathlib import Path

# each stage's outputs, in the order `make all` runs the stages (Makefile)
STAGES = {
    "install": [".venv/.installed"],
    "data": ["checkpoints/data.json"],
    "classifier": ["checkpoints/classifier.safetensors", "reports/classifier_curves.png"],
    "VAE": ["checkpoints/vae.safetensors", "reports/vae_curves.png"],
    "latents": ["checkpoints/latents.safetensors"],
    "UNet": ["checkpoints/unet.safetensors", "checkpoints/guide.safetensors", "reports/unet_curves.png"],
    "samples: random digits": ["checkpoints/samples_default.safetensors", "checkpoints/samples_default.png"],
    "samples: no label": ["checkpoints/samples_nolabel.safetensors", "checkpoints/samples_nolabel.png"],
    "samples: digits 0-9": ["checkpoints/samples_digits.safetensors", "checkpoints/samples_digits_process.png"],
    "evaluation": ["reports/fid.json", "reports/fid.md"],
}


def stage_minutes(root: Path) -> dict[str, float]:
    start = (root / ".venv" / "pyvenv.cfg").stat().st_mtime
    minutes, previous = {}, start
    for stage, outputs in STAGES.items():
        missing = [name for name in outputs if not (root / name).is_file()]
        if missing:
            sys.exit(f"error: {root / missing[0]} is missing: run this after `make all` has finished")
        end = max((root / name).stat().st_mtime for name in outputs)
        if end < previous:
            sys.exit(f"error: {stage}'s outputs are older than the stage before: not one uninterrupted `make all`")
        minutes[stage], previous = (end - previous) / 60, end
    return minutes


def main(root: Path) -> None:
    minutes = stage_minutes(root)
    print("| stage | minutes |\n|---|---:|")
    for stage, value in minutes.items():
        print(f"| {stage} | {value:.1f} |")
    print(f"| **total** | **{sum(minutes.values()):.1f}** |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))

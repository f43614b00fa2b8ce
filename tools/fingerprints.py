"""One line per output file under a folder: its path and a hash of what a run decides, leaving
out what the clock decides. Tensors of safetensors files (their metadata without timings),
PNG pixels, JSON and JSON-lines numbers without timings; other files are listed by name only.

    python tools/fingerprints.py /tmp/before > before.txt    (then diff before.txt after.txt)
"""

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

CLOCK = re.compile(r"second|per_s|time|device|version|path|file|dir|grid|fingerprint|processes|compiled|torch")


def without_clock(value):
    """JSON with every timing (and every path or version string, which differ between trees) dropped."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in sorted(value.items()) if not CLOCK.search(k)}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def digest(path: Path) -> str:
    if path.suffix == ".safetensors":
        h = hashlib.sha256()
        for name, array in sorted(load_file(path).items()):
            h.update(name.encode() + array.tobytes())
        with safe_open(path, "np") as f:
            metadata = f.metadata() or {}
        h.update(metadata.get("kind", "").encode())
        for key in ("info", "config"):
            if key in metadata:
                h.update(json.dumps(without_clock(json.loads(metadata[key])), sort_keys=True).encode())
        return h.hexdigest()[:16]
    if path.suffix == ".png":
        return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()[:16]
    if path.suffix == ".json":
        return hashlib.sha256(json.dumps(without_clock(json.loads(path.read_text())), sort_keys=True).encode()
                              ).hexdigest()[:16]
    if path.name.endswith(".jsonl"):
        lines = [without_clock(json.loads(line)) for line in path.read_text().splitlines() if line]
        return hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()[:16]
    return "-"


root = Path(sys.argv[1])
for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".out")
                   and p.name != "fingerprints.txt"):
    print(path.relative_to(root), digest(path))

"""MNIST from the standard IDX files (.gz or raw), read with numpy and validated; the image
representations every model and report uses (uint8 and floats in [0, 1]); seeded minibatches.

The data folder may hold the four files directly, or in torchvision's DIR/MNIST/raw/ layout.
"""

from __future__ import annotations

import gzip
import math
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, LdmError

IMAGE_SIZE = 28
NUM_CLASSES = 10
SAMPLE_BYTES = IMAGE_SIZE**2 + 8  # what one image with its label takes held in memory: uint8 pixels, int64
# IDX magic numbers: 0x08 = unsigned byte, last byte = number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def default_data_dir() -> str:
    return os.environ.get("LDM_DATA_DIR", "data")


def find_idx_file(data_dir: str | os.PathLike, stem: str) -> Path:
    """Locate `stem` (.gz or raw) in data_dir or data_dir/MNIST/raw."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigError("data_dir", data_dir, "data folder does not exist (or set LDM_DATA_DIR, or make DATA=...)")
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
            if (folder / name).exists():
                raise LdmError(f"{folder / name}: not a regular file (a directory or a device?)")
    raise LdmError(f"{data_dir / (stem + '.gz')}: MNIST file not found (nor raw, nor under MNIST/raw/); "
                   "`make all` without DATA fetches the four files into data/ (scripts.prepare_data --download)")


def _read_at_most(stream, n: int) -> bytes:
    """Up to `n` bytes of `stream`, in chunks: `n` comes from a header and may be absurdly large."""
    chunks, size = [], 0
    while size < n:
        chunk = stream.read(min(n - size, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Parse one IDX file into a uint8 array, checking its magic number and size. The header is
    read from the stream first, so that no more than the size it states (plus one byte, to find
    a file too long) is ever decompressed."""
    path = Path(path)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            header = f.read(header_len)
            if len(header) < header_len:
                raise LdmError(f"{path}: file too short for an IDX header ({len(header)} bytes)")
            found = int.from_bytes(header[:4], "big")
            if found != magic:
                raise LdmError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x}")
            shape = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(shape)  # Python integers: no overflow, whatever the header says
            body = _read_at_most(f, expected + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise LdmError(f"{path}: truncated or corrupt gzip file ({e})") from e
    except OSError as e:
        raise LdmError(f"{path}: cannot read ({e.strerror or e})") from e
    if len(body) < expected:
        raise LdmError(f"{path}: header says shape {shape} ({expected} bytes) "
                       f"but the file holds {len(body)} bytes after it (truncated?)")
    if len(body) > expected:
        raise LdmError(f"{path}: header says shape {shape} ({expected} bytes) "
                       f"but the file holds more after it (too long: not an IDX file of that shape)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def load_mnist(data_dir: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 [N, 28, 28], labels int64 [N]) of the 'train' or 'test' split."""
    if split not in FILE_STEMS:
        raise ValueError(f"split must be one of {sorted(FILE_STEMS)}, got {split!r}")
    image_stem, label_stem = FILE_STEMS[split]
    image_path, label_path = find_idx_file(data_dir, image_stem), find_idx_file(data_dir, label_stem)
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise LdmError(f"{image_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) == 0:
        raise LdmError(f"{image_path}: holds no images")
    if len(images) != len(labels):
        raise LdmError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}")
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise LdmError(f"{label_path}: label {labels.max()} outside 0-9")
    if images.min() == images.max():
        warnings.warn(f"{image_path}: every image is blank (every pixel is {images.min()})")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


Split = tuple[torch.Tensor, torch.Tensor]


def load_mnist_splits(data_dir: str | os.PathLike) -> tuple[Split, Split]:
    """Both splits, (images, labels) each as `load_mnist` reads them; a training split smaller
    than the test split (the files swapped, or a stub) is legal but almost surely a mistake, and
    warned about."""
    train, test = load_mnist(data_dir, "train"), load_mnist(data_dir, "test")
    if len(train[0]) < len(test[0]):
        warnings.warn(f"{data_dir}: the training split holds {len(train[0])} images, fewer than the "
                      f"{len(test[0])} of the test split (files swapped?)")
    return train, test


def labels_problem(labels: torch.Tensor, n: int) -> str | None:
    """What is wrong with digit labels read from a file (a latent cache, samples), or None: they
    must be int64 [n] in 0-9."""
    if labels.dtype != torch.int64 or labels.shape != (n,):
        return f"labels are {labels.dtype} {tuple(labels.shape)}, expected int64 [{n}]"
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        return f"labels hold {labels.min().item()}..{labels.max().item()}, outside the digits 0-9"
    return None


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1], the range every model takes."""
    return images.unsqueeze(1).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_float`: [N x 1 x 28 x 28] floats in [0, 1] -> [N x 28 x 28] uint8 on the CPU."""
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu()


class BatchSampler:
    """Endless minibatches of indices: a fresh random permutation per epoch from a seeded generator."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise ConfigError("batch_size", batch_size, f"larger than the {n} training examples")
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self._perm, self._pos = torch.randperm(n, generator=self.generator), 0

    def next(self) -> torch.Tensor:
        if self._pos + self.batch_size > self.n:  # drop the ragged tail, start a new epoch
            self._perm, self._pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self._perm[self._pos: self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        """Where the sampler is, so that a resumed run draws the same batches."""
        return {"generator": self.generator.get_state(), "perm": self._perm.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._perm, self._pos = state["perm"].clone(), int(state["pos"])

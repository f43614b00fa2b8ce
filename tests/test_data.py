import gzip
from pathlib import Path

import numpy as np
import pytest

from ldm.data import IMAGES_MAGIC, LABELS_MAGIC, BatchSampler, load_mnist, read_idx
from ldm.errors import LdmError
from stage_scripts import write_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def make_mnist(folder: Path, n_train=30, n_test=20, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def test_round_trip_gz_and_raw(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", IMAGES_MAGIC), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "b", IMAGES_MAGIC), array)


def test_load_from_folder_and_torchvision_layout(tmp_path):
    images, labels = load_mnist(make_mnist(tmp_path / "flat"), "train")
    assert images.shape == (30, 28, 28) and labels.shape == (30,)
    images, _ = load_mnist(make_mnist(tmp_path / "tv" / "MNIST" / "raw").parents[1], "test")
    assert images.shape == (20, 28, 28)


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(LdmError, match="does not exist"):
        load_mnist(tmp_path / "nowhere", "train")
    folder = make_mnist(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(LdmError, match="t10k-labels-idx1-ubyte.gz: MNIST file not found"):
        load_mnist(folder, "test")


def test_truncated_gzip_names_the_file(tmp_path):
    folder = make_mnist(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(LdmError, match=f"{path}: truncated or corrupt gzip"):
        load_mnist(folder, "train")


def test_truncated_payload_inside_valid_gzip(tmp_path):
    folder = make_mnist(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(LdmError, match="truncated"):
        load_mnist(folder, "train")


def test_wrong_magic_number(tmp_path):
    folder = make_mnist(tmp_path)
    images = folder / "train-images-idx3-ubyte.gz"
    labels = folder / "train-labels-idx1-ubyte.gz"
    images.write_bytes(labels.read_bytes())  # a labels file where images are expected
    with pytest.raises(LdmError, match="wrong magic number 0x00000801, expected 0x00000803"):
        load_mnist(folder, "train")


def test_count_mismatch(tmp_path):
    folder = make_mnist(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(LdmError, match="29 labels for 30 images"):
        load_mnist(folder, "train")


def test_wrong_image_size(tmp_path):
    folder = make_mnist(tmp_path)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((30, 32, 32), dtype=np.uint8))
    with pytest.raises(LdmError, match="expected 28x28"):
        load_mnist(folder, "train")


def test_batch_sampler_covers_an_epoch_without_repeats_and_is_seeded():
    a, b = BatchSampler(10, 5, seed=3), BatchSampler(10, 5, seed=3)
    first_epoch = [a.next() for _ in range(2)]
    assert sorted(np.concatenate(first_epoch).tolist()) == list(range(10))
    assert all((x == y).all() for x, y in zip(first_epoch, [b.next() for _ in range(2)]))
    with pytest.raises(LdmError, match="batch_size=5: larger than the 4"):
        BatchSampler(4, 5, seed=0)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared MNIST subset not present")
def test_shared_mnist_subset_is_what_its_readme_says():
    images, labels = load_mnist(SHARED, "train")
    assert images.shape == (24_345, 28, 28)
    assert np.bincount(labels.numpy()).tolist() == [2406, 2770, 2381, 2524, 2386, 2181, 2401, 2524, 2328, 2444]
    test_images, _ = load_mnist(SHARED, "test")
    assert test_images.shape == (10_000, 28, 28) and read_idx(SHARED / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC).shape == (10_000,)

"""Image-to-image, inpainting and interpolation on the smoke pipeline's models: the API against
plain sampling and the VAE reconstruction it must reduce to, and scripts/edit.py against the API,
with its refusals of bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.checkpoint import load_model
from ldm.classifier import Classifier
from ldm.data import load_mnist, to_uint8
from ldm.editing import HALVES, half_mask
from ldm.editing_study import RESAMPLES, SHIFT, STRENGTHS, digits_in_turn
from ldm.errors import ConfigError
from ldm.pipeline import LatentDiffusion
from ldm.samples import load_samples
from stage_scripts import CPU, assert_one_line_error, run_inline, write_idx, write_synthetic_mnist


@pytest.fixture
def pipe(pipeline):
    return LatentDiffusion.from_pretrained(pipeline["ckpt"], device="cpu")


@pytest.fixture
def digits(pipeline):
    return load_mnist(pipeline["data"], "test")[0][:6]


def reconstruction(pipe: LatentDiffusion, images: torch.Tensor) -> torch.Tensor:
    """The VAE's decoding of the images' posterior means, computed here from the VAE itself."""
    mean, _ = pipe.vae.encode(images.float()[:, None] / 255)
    return to_uint8(pipe.vae.decode(mean))


def test_img2img_runs_from_the_reconstruction_at_strength_zero_to_plain_sampling_at_one(pipe, digits):
    assert torch.equal(pipe.img2img(digits, 0.0, digit=3), reconstruction(pipe, digits))
    assert torch.equal(pipe.img2img(digits, 1.0, digit=3, seed=2), pipe(6, digit=3, seed=2))
    assert torch.equal(pipe.img2img(digits, 1.0, seed=2), pipe(6, digit="none", seed=2))  # unset: "no label"
    assert torch.equal(pipe.img2img(digits, 1.0, digit="all", sampler="ddim", steps=4, seed=1),
                       pipe(6, digit="all", sampler="ddim", steps=4, seed=1))
    halfway = pipe.img2img(digits, 0.5, digit=3, seed=2)
    assert not torch.equal(halfway, reconstruction(pipe, digits)) and not torch.equal(halfway, pipe(6, digit=3, seed=2))
    with pytest.raises(ConfigError, match="strength"):
        pipe.img2img(digits, 1.2)
    for call in (lambda: pipe(2, seed=-1), lambda: pipe.img2img(digits, 0.5, seed=-1), lambda: pipe(2, seed=1.5)):
        with pytest.raises(ConfigError, match="seed"):
            call()


def test_inpainting_keeps_what_the_mask_keeps_and_regenerates_the_rest(pipe, digits):
    everything, nothing = torch.ones(28, 28, dtype=torch.bool), torch.zeros(28, 28, dtype=torch.bool)
    # all kept: the final latents are the images' own, decoded as the reconstruction
    assert torch.equal(pipe.inpaint(digits, everything, digit=3, seed=4), reconstruction(pipe, digits))
    # nothing kept and no resampling: a deterministic chain is plain sampling
    assert torch.equal(pipe.inpaint(digits, nothing, digit=3, resample=1, seed=4), pipe(6, digit=3, seed=4))
    top = nothing.clone()
    top[:12] = True  # three whole rows of latent blocks
    completed = pipe.inpaint(digits, top, digit=3, seed=4)
    assert completed.shape == (6, 28, 28) and not torch.equal(completed, reconstruction(pipe, digits))
    with pytest.raises(ConfigError, match="mask"):
        pipe.inpaint(digits, torch.ones(27, 28))


def test_interpolation_ends_are_plain_samples(pipe):
    frames = pipe.interpolate(5, seeds=(2, 3), digits=(1, 4))
    assert frames.shape == (5, 28, 28)
    assert torch.equal(frames[0], pipe(1, digit=1, seed=2)[0]) and torch.equal(frames[-1], pipe(1, digit=4, seed=3)[0])
    # unset digits: each end's digit drawn from its seed, as plain sampling does, at η = 0
    frames = pipe.interpolate(4, seeds=(5, 6), sampler="ddim", steps=3)
    assert torch.equal(frames[0], pipe(1, seed=5, sampler="ddim", steps=3)[0])
    assert torch.equal(frames[-1], pipe(1, seed=6, sampler="ddim", steps=3)[0])
    same = pipe.interpolate(3, seeds=(7, 7), digits=("none", "none"))
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], pipe(1, digit="none", seed=7, eta=0)[0])
    both = pipe.interpolate(3, seeds=(2, 3), digits=4)  # one digit serves both ends
    assert torch.equal(both[0], pipe(1, digit=4, seed=2)[0]) and torch.equal(both[-1], pipe(1, digit=4, seed=3)[0])
    for kwargs, match in ((dict(digits=(3, "none")), "alike"), (dict(sampler="ddpm"), "deterministic"),
                          (dict(frames=1), "frames"), (dict(seeds=(1,)), "two seeds"), (dict(seeds=(1, -2)), "seeds"),
                          (dict(digits=(1, 2, 3)), "two digits")):
        with pytest.raises(ConfigError, match=match):
            pipe.interpolate(**{"frames": 4, **kwargs})


def edit(pipeline, mode, *args):
    return run_inline("edit", mode, *pipeline["models"], *CPU, "--data-dir", pipeline["data"], *args)


def test_the_script_writes_what_the_api_makes(pipeline, pipe, digits, tmp_path, default_precision):
    out = tmp_path / "eights.safetensors"
    result = edit(pipeline, "img2img", "--test-index", *range(6), "--strength", 0.5, "--digit", 8, "--seed", 3,
                  "--out", out)
    assert result.returncode == 0, result.stderr
    written = load_samples(out)
    assert torch.equal(written.images, pipe.img2img(digits, 0.5, digit=8, seed=3))
    assert written.labels.tolist() == [8] * 6 and written.info["edit"]["strength"] == 0.5
    assert Image.open(out.with_suffix(".png")).size == (6 * 30 + 2, 2 * 30 + 2)  # inputs over results
    mask = torch.zeros(28, 28, dtype=torch.uint8)
    mask[14:] = 255
    Image.fromarray(mask.numpy(), mode="L").save(tmp_path / "mask.png")
    Image.fromarray(digits[0].numpy(), mode="L").save(tmp_path / "digit.png")
    out = tmp_path / "completed.safetensors"
    assert edit(pipeline, "inpaint", "--images", tmp_path / "digit.png", "--mask", tmp_path / "mask.png",
                "--resample", 2, "--out", out).returncode == 0
    assert torch.equal(load_samples(out).images, pipe.inpaint(digits[:1], mask == 255, resample=2))
    out = tmp_path / "strip.safetensors"
    assert edit(pipeline, "interpolate", "--seeds", 1, 2, "--digits", 0, 9, "--frames", 6, "--out", out).returncode == 0
    written = load_samples(out)
    assert torch.equal(written.images, pipe.interpolate(6, seeds=(1, 2), digits=(0, 9)))
    assert written.labels.tolist() == [0, 0, 0, 9, 9, 9]  # the nearer end's digit


def test_bad_edit_inputs_are_refused_in_one_line_and_nothing_is_written(pipeline, tmp_path):
    Image.new("RGB", (28, 28)).save(tmp_path / "colour.png")
    Image.new("L", (32, 28)).save(tmp_path / "wide.png")
    Image.new("L", (28, 28), color=128).save(tmp_path / "grey.png")
    (tmp_path / "text.png").write_text("not an image")
    out = tmp_path / "out.safetensors"
    cases = [
        (("img2img", "--images", tmp_path / "colour.png"), "greyscale"),
        (("img2img", "--images", tmp_path / "wide.png"), "32 x 28 pixels"),
        (("img2img", "--images", tmp_path / "text.png"), "not a readable image"),
        (("img2img", "--images", tmp_path / "missing.png"), "no such file"),
        (("img2img",), "--images or --test-index"),
        (("img2img", "--test-index", 10 ** 6), "--test-index 1000000"),
        (("img2img", "--test-index", 0, "--strength", 1.5), "--strength 1.5"),
        (("img2img", "--test-index", 0, "--keep", "top"), "--keep: only for inpaint"),
        (("inpaint", "--test-index", 0), "--mask or --keep"),
        (("inpaint", "--test-index", 0, "--mask", tmp_path / "grey.png"), "grey pixels"),
        (("inpaint", "--test-index", 0, "--keep", "top", "--resample", 0), "--resample"),
        (("interpolate", "--test-index", 0), "starts from noise"),
        (("interpolate", "--digits", 3, "none"), "alike"),
        (("interpolate", "--sampler", "ddpm"), "deterministic"),
        (("img2img", "--test-index", 0, "--digit", 12), "--digit 12"),
    ]
    for args, fragment in cases:
        assert_one_line_error(edit(pipeline, *args, "--out", out), fragment)
        assert not out.exists() and not out.with_suffix(".png").exists()


@pytest.mark.slow
def test_the_editing_study_measures_what_the_api_makes_and_draws_every_picture(pipeline, pipe, tmp_path,
                                                                               default_precision):
    ckpt = pipeline["ckpt"]
    study = ["--classifier", ckpt / "classifier.safetensors", *pipeline["models"], *CPU, "--num-images", 20,
             "--inpaint-images", 10, "--out-dir", tmp_path]
    present = set(load_mnist(pipeline["data"], "test")[1].tolist())
    missing = [d for d in range(10) if d not in present]  # the smoke test set's random labels may lack one
    if missing:
        assert_one_line_error(run_inline("editing", "--data-dir", pipeline["data"], *study),
                              f"no image of digit {missing[0]}")
    data = write_synthetic_mnist(tmp_path / "data")  # a test set with every digit, images of each repeated
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.arange(32) % 10)
    result = run_inline("editing", "--data-dir", data, *study)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "editing.json").read_text())
    assert [(r["prompt"], r["strength"]) for r in report["img2img"]] == \
        [(p, s) for p in ("another digit", "no label") for s in STRENGTHS]
    assert [(r["kept"], r["prompt"], r["resample"]) for r in report["inpaint"]] == \
        [(h, p, r) for h in HALVES for p in ("own digit", "no label") for r in RESAMPLES]
    # cells recomputed here through the API and the classifier
    images, labels = load_mnist(data, "test")
    classifier, _ = load_model(ckpt / "classifier.safetensors", Classifier)
    shifted = digits_in_turn(images, labels, 20, SHIFT)
    assert ((labels[shifted] - torch.arange(20)) % 10 == SHIFT).all()
    out = pipe.img2img(images[shifted], 0.7, digit="all")
    with torch.no_grad():
        predicted = classifier.eval()(out.float()[:, None] / 255).argmax(1)
    row = report["img2img"][7]
    assert row["strength"] == 0.7 and row["recognised_prompt"] == pytest.approx(
        (predicted == torch.arange(20) % 10).double().mean().item())
    own = digits_in_turn(images, labels, 10)
    out = pipe.inpaint(images[own], half_mask("left"), resample=RESAMPLES[1])
    row = next(r for r in report["inpaint"] if (r["kept"], r["prompt"], r["resample"]) ==
               ("left", "no label", RESAMPLES[1]))
    kept = half_mask("left")
    assert row["kept_change"] == pytest.approx((out.float() - images[own].float()).abs()[:, kept].mean().item())
    for name in ("editing.md", "editing.png", "img2img.png", "inpainting.png", "interpolation.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert Image.open(tmp_path / "interpolation.png").size == (10 * 30 + 2, 3 * 30 + 2)

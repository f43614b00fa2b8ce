"""The web demo (ldm/demo.py): its handlers on the smoke pipeline's models, and the page itself
driven in headless Chromium through Playwright (skipped, with the reason, where Gradio, Playwright
or Chromium is missing; .ci/run installs them)."""

import importlib.util
import os
import socket

import numpy as np
import pytest
import torch

from ldm.demo import CHROMIUM, SCALE, Demo, drawn_digit
from ldm.pipeline import LatentDiffusion


@pytest.fixture
def demo(pipeline):
    return Demo.load(pipeline["ckpt"], pipeline["data"], "cpu")


def test_generate_shows_the_samples_the_pipeline_makes_and_its_errors_as_a_line(demo, pipeline):
    grid, strip, status = demo.generate("7", "", "ddim", "3", 2, 4)
    pipe = LatentDiffusion.from_pretrained(pipeline["ckpt"], device="cpu")
    images = pipe(4, digit=7, sampler="ddim", steps=3, seed=2)
    assert grid.shape == (SCALE * 32, SCALE * (4 * 30 + 2))  # 4 images of 28 + 2 padding, one row
    assert np.array_equal(grid[SCALE * 2:SCALE * 30:SCALE, SCALE * 2:SCALE * 30:SCALE], images[0].numpy())
    assert strip.shape[0] == SCALE * (4 * 30 + 2) and status.startswith("4 images of digit 7")
    for args, fragment in ((("7", "", "ddim", "0", 2, 4), "steps=0"), (("7", "-1", "default", "", 0, 4), "guidance"),
                           (("7", "abc", "default", "", 0, 4), "guidance 'abc': not a number"),
                           (("7", "", "default", "2.5", 0, 4), "whole number"),
                           (("7", "", "default", "", 0, 0), "images 0"), (("12", "", "default", "", 0, 4), "digit"),
                           (("7", "", "default", "", -3, 4), "seed -3")):
        grid, strip, status = demo.generate(*args)
        assert grid is None and strip is None and status.startswith("Error: ") and fragment in status, status


def test_edits_take_a_test_digit_or_a_drawing_and_refuse_what_is_missing(demo):
    picture, status = demo.img2img("test digit", 3, None, 0.5, "8", 0, 2)
    assert picture.shape == (SCALE * 32, SCALE * (3 * 30 + 2)) and "2 results" in status
    picture, status = demo.inpaint("test digit", 0, None, "top", "none", 2, 0, 3)
    assert picture.shape == (SCALE * 32, SCALE * (5 * 30 + 2)) and "3 completions" in status
    picture, status = demo.interpolate(0, 1, "3", "8", 5)
    assert picture.shape == (SCALE * 32, SCALE * (5 * 30 + 2)) and "5 frames" in status
    for result, fragment in ((demo.img2img("test digit", 10 ** 6, None, 0.5, "8", 0, 2), "test digit 1000000"),
                             (demo.img2img("drawing", 0, None, 0.5, "8", 0, 2), "nothing drawn"),
                             (demo.img2img("test digit", 0, None, 1.5, "8", 0, 2), "strength"),
                             (demo.inpaint("test digit", 0, None, "middle", "none", 2, 0, 2), "keep=middle"),
                             (demo.inpaint("test digit", 0, None, "top", "none", 0, 0, 2), "resample=0"),
                             (demo.img2img("test digit", 0, None, 0.5, "8", -1, 2), "seed -1"),
                             (demo.interpolate(0, -1, "3", "8", 5), "seed -1"),
                             (demo.interpolate(0, 1, "3", "none", 5), "alike")):
        assert result[0] is None and result[1].startswith("Error: ") and fragment in result[1], result[1]


def test_a_drawing_becomes_a_white_on_black_digit(demo):
    canvas = np.full((280, 280, 3), 255, dtype=np.uint8)  # black strokes on white, as a pen draws
    canvas[40:240, 130:150] = 0
    digit = drawn_digit({"composite": canvas})
    assert digit.shape == (28, 28) and digit.dtype == torch.uint8
    assert digit[4:24, 13:15].float().mean() > 200 and digit[:, :10].max() == 0  # the stroke white, the rest black
    assert drawn_digit({"composite": np.zeros((280, 280, 4), dtype=np.uint8)}) is None  # nothing drawn
    picture, status = demo.img2img("drawing", 0, {"composite": canvas}, 0.0, "none", 0, 1)
    assert "1 results" in status and picture.shape[1] == SCALE * (2 * 30 + 2)


def test_without_checkpoints_the_page_says_what_to_run(tmp_path):
    demo = Demo.load(tmp_path, None, "cpu")
    assert "make all" in demo.problem
    grid, strip, status = demo.generate("any", "", "default", "", 0, 16)
    assert grid is None and status.startswith("Error: ") and "make all" in status


def browser_missing() -> str | None:
    for module in ("gradio", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def serve(demo: Demo):
    """The demo's page on a free port of this machine: (app, url)."""
    from ldm.demo import build_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(demo)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return app, f"http://127.0.0.1:{port}/"


@pytest.mark.slow
@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_the_page_generates_digits_in_a_real_browser_and_says_when_checkpoints_are_missing(demo, tmp_path):
    from ldm.demo import drive
    app, url = serve(demo)
    try:
        shown = drive(url, tmp_path / "demo.png")
    finally:
        app.close()
    assert shown["problem"] is None and shown["status"].startswith("16 images of random digits"), shown["status"]
    image = shown["image"]  # the grid as the page shows it: 16 digits, not blank
    assert image.shape == (SCALE * (2 * 30 + 2), SCALE * (8 * 30 + 2)) and image.std() > 10
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    app, url = serve(Demo.load(tmp_path / "nothing", None, "cpu"))
    try:
        shown = drive(url, tmp_path / "no_model.png")
    finally:
        app.close()
    assert "make all" in shown["problem"] and shown["status"].startswith("Error: ") and shown["image"] is None

"""The web demo of `make demo`: generate digits, turn a digit into another (image-to-image),
complete half a digit (inpainting) and morph between samples (interpolation) in a browser page,
from the checkpoints `make all` writes. Gradio (the optional `demo` extra) draws the page; the
work is done by `Demo`, whose methods take the page's values and return pictures and a status
line, so that they can be tested without a browser. A setting outside its domain, or missing
checkpoints, gives a readable line in the page, never a traceback.

`drive` opens a served demo in headless Chromium through Playwright, clicks Generate and saves a
screenshot: the browser test and the README's screenshot use it.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import IMAGE_SIZE, load_mnist
from .editing import HALVES, RESAMPLE, half_mask
from .errors import LdmError
from .images import grid_array
from .pipeline import LatentDiffusion
from .sampling import SAMPLERS, SamplerConfig

DIGIT_CHOICES = ["any", "none", "all", *map(str, range(10))]
SCALE = 4  # screen pixels per image pixel: 28 x 28 digits are too small to see
MAX_IMAGES = 64
CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is not needed
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def picture(images: torch.Tensor, columns: int) -> np.ndarray:
    """uint8 images [N x 28 x 28] (or floats [N x 1 x 28 x 28]) as one enlarged grey grid."""
    grid = grid_array(images, nrow=columns)
    return np.kron(grid, np.ones((SCALE, SCALE), dtype=np.uint8))


def optional_number(value, kind=float, label: str = "value"):
    """A number field left blank (None or "") means the default; text that is no number is refused."""
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise LdmError(f"{label} {value!r}: not a number") from None
    if kind is int and number != int(number):
        raise LdmError(f"{label} {value!r}: must be a whole number")
    return kind(number)


def drawn_digit(drawing) -> torch.Tensor | None:
    """A Sketchpad's picture as a 28 x 28 uint8 digit, white on black as MNIST's (a light
    background is inverted), or None when nothing was drawn."""
    if drawing is None:
        return None
    array = drawing.get("composite") if isinstance(drawing, dict) else drawing
    if array is None:
        return None
    image = Image.fromarray(np.asarray(array).astype(np.uint8))
    if image.mode == "RGBA":  # transparent canvas: the strokes are where alpha is
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    grey = np.asarray(image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS), dtype=np.uint8)
    if np.median(grey) > 127:
        grey = 255 - grey
    return None if grey.max() == 0 else torch.from_numpy(grey.copy())


@dataclass
class Demo:
    model: LatentDiffusion | None
    test_images: torch.Tensor | None  # MNIST test digits to pick from
    problem: str | None  # why there is no model, shown in the page

    @classmethod
    def load(cls, checkpoints: str | os.PathLike, data_dir: str | os.PathLike | None,
             device: torch.device | str = "cpu") -> "Demo":
        """The model `make all` wrote into `checkpoints` (with its guide) and the test digits of
        `data_dir`; what is missing is recorded, not raised."""
        model = problem = images = None
        try:
            model = LatentDiffusion.from_pretrained(checkpoints, device=device)
        except LdmError as e:
            problem = f"{e}. Run `make all` first, or start the demo with --checkpoints FOLDER."
        if data_dir is not None:
            try:
                images, _ = load_mnist(data_dir, "test")
            except LdmError:
                images = None  # picking test digits is then refused with a message
        return cls(model, images, problem)

    def _model(self) -> LatentDiffusion:
        if self.model is None:
            raise LdmError(self.problem)
        return self.model

    def _input(self, source: str, test_index, drawing) -> torch.Tensor:
        if source == "drawing":
            digit = drawn_digit(drawing)
            if digit is None:
                raise LdmError("nothing drawn: draw a digit, or pick one from the test set")
            return digit
        if self.test_images is None:
            raise LdmError("no MNIST test set: start the demo with --data-dir, or draw a digit")
        index = optional_number(test_index, int)
        if index is None or not 0 <= index < len(self.test_images):
            raise LdmError(f"test digit {test_index}: choose one in 0..{len(self.test_images) - 1}")
        return self.test_images[index]

    @staticmethod
    def _count(num_images) -> int:
        count = optional_number(num_images, int)
        if count is None or not 1 <= count <= MAX_IMAGES:
            raise LdmError(f"images {num_images}: choose 1..{MAX_IMAGES}")
        return count

    @staticmethod
    def _seed(value) -> int:
        """A seed field: blank is 0; a seed is a whole number >= 0."""
        seed = optional_number(value, int, "seed")
        if seed is not None and seed < 0:
            raise LdmError(f"seed {value}: must be a whole number >= 0")
        return seed or 0

    @staticmethod
    def _sampler(sampler: str) -> str | None:
        return None if sampler in (None, "", "default") else sampler

    @staticmethod
    def _digit(digit: str) -> str | int:
        return int(digit) if digit.isdigit() else digit

    def generate(self, digit: str, guidance, sampler: str, steps, seed, num_images):
        """(grid, denoising strip, status): num_images samples of the prompt, and the chain's x̂_0
        for the first four."""
        def run():
            model, count, first = self._model(), self._count(num_images), self._seed(seed)
            prompt = model.prompt(self._digit(digit), optional_number(guidance, float, "guidance"))
            config = SamplerConfig.for_branch(prompt.unconditional, self._sampler(sampler),
                                              optional_number(steps, int, "steps"))
            start = time.time()
            images = model.sample(count, config, prompt, seed=first)
            seconds = time.time() - start
            strip = model.denoising_strip(min(4, count), config, prompt, seed=first)
            return (picture(images, min(8, count)), picture(strip.flatten(0, 1), strip.shape[1]),
                    f"{count} images of {prompt.name(bool(model.num_classes)) or 'the model'} with {config.label} "
                    f"in {seconds:.2f} s")
        return self._guarded(run, 2)

    def img2img(self, source: str, test_index, drawing, strength, digit: str, seed, num_images):
        """(picture, status): the input, then num_images results, each from its own noise."""
        def run():
            model, count = self._model(), self._count(num_images)
            image = self._input(source, test_index, drawing)
            start = time.time()
            out = model.img2img(image[None].expand(count, -1, -1), float(strength), digit=self._digit(digit),
                                seed=self._seed(seed))
            return (picture(torch.cat([image[None], out]), count + 1),
                    f"{count} results at strength {float(strength):.2f} in {time.time() - start:.2f} s "
                    "(left: the input)")
        return self._guarded(run, 1)

    def inpaint(self, source: str, test_index, drawing, keep: str, digit: str, resample, seed, num_images):
        """(picture, status): the input, the kept part, then num_images completions."""
        def run():
            model, count = self._model(), self._count(num_images)
            image = self._input(source, test_index, drawing)
            mask, tries = half_mask(keep), optional_number(resample, int, "resample")
            start = time.time()
            out = model.inpaint(image[None].expand(count, -1, -1), mask, digit=self._digit(digit),
                                resample=RESAMPLE if tries is None else tries, seed=self._seed(seed))
            kept = torch.where(mask, image, torch.full_like(image, 64))
            return (picture(torch.cat([image[None], kept[None], out]), count + 2),
                    f"{count} completions in {time.time() - start:.2f} s (left: the input, then the part kept)")
        return self._guarded(run, 1)

    def interpolate(self, seed_a, seed_b, digit_a: str, digit_b: str, frames):
        """(picture, status): the strip from one end to the other."""
        def run():
            model = self._model()
            count = optional_number(frames, int)
            start = time.time()
            out = model.interpolate(count, seeds=(self._seed(seed_a), self._seed(seed_b)),
                                    digits=(self._digit(digit_a), self._digit(digit_b)))
            return picture(out, len(out)), f"{len(out)} frames in {time.time() - start:.2f} s"
        return self._guarded(run, 1)

    @staticmethod
    def _guarded(run, pictures: int):
        """run(), or no pictures and the error as the status line."""
        try:
            return run()
        except LdmError as e:  # ConfigError included: a setting named by its field
            return (*([None] * pictures), f"Error: {e}")


def build_app(demo: Demo):
    """The Gradio page of `demo`: one tab per thing to do."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports leave the machine
    import gradio as gr

    with gr.Blocks(title="ldm: latent diffusion on MNIST", analytics_enabled=False) as app:
        gr.Markdown("# ldm: latent diffusion on MNIST\nGenerate digits, turn one into another, complete half a "
                    "digit, morph between samples. Blank numbers take the model's defaults.")
        if demo.problem:
            gr.Markdown(f"**No model:** {demo.problem}", elem_id="problem")
        with gr.Tab("Generate"):
            with gr.Row():
                digit = gr.Dropdown(DIGIT_CHOICES, value="any", label="digit (any: drawn from the training "
                                    "frequencies; none: the \"no label\" branch; all: 0-9 in turn)")
                guidance = gr.Textbox(value="", placeholder="default", label="guidance (blank: the default)")
                sampler = gr.Dropdown(["default", *SAMPLERS], value="default", label="sampler")
                steps = gr.Textbox(value="", placeholder="default", label="steps (blank: the sampler's default)")
                seed = gr.Number(value=0, precision=0, label="seed")
                count = gr.Slider(1, MAX_IMAGES, value=16, step=1, label="images")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            status = gr.Markdown(elem_id="generate-status")
            images = gr.Image(label="samples", type="numpy", image_mode="L", elem_id="samples")
            strip = gr.Image(label="denoising: the prediction x̂₀ along the chain, then the sample", type="numpy",
                             image_mode="L")
            button.click(demo.generate, [digit, guidance, sampler, steps, seed, count], [images, strip, status])

        def source_inputs():
            source = gr.Radio(["test digit", "drawing"], value="test digit", label="input")
            index = gr.Number(value=0, precision=0, label="MNIST test digit (index)")
            drawing = gr.Sketchpad(label="or draw a digit", canvas_size=(280, 280), type="numpy",
                                   brush=gr.Brush(colors=["#ffffff"], default_size=24))
            return source, index, drawing

        with gr.Tab("Image to image"):
            source, index, drawing = source_inputs()
            with gr.Row():
                strength = gr.Slider(0, 1, value=0.6, step=0.05, label="strength (0: the input, 1: a new sample)")
                digit = gr.Dropdown(DIGIT_CHOICES, value="8", label="turn it into")
                seed = gr.Number(value=0, precision=0, label="seed")
                count = gr.Slider(1, 16, value=8, step=1, label="results")
            button = gr.Button("Edit", variant="primary", elem_id="img2img")
            status = gr.Markdown(elem_id="img2img-status")
            out = gr.Image(label="result", type="numpy", image_mode="L")
            button.click(demo.img2img, [source, index, drawing, strength, digit, seed, count], [out, status])
        with gr.Tab("Inpainting"):
            source, index, drawing = source_inputs()
            with gr.Row():
                keep = gr.Dropdown(list(HALVES), value="top", label="keep this half")
                digit = gr.Dropdown(DIGIT_CHOICES, value="none", label="complete it as")
                resample = gr.Number(value=RESAMPLE, precision=0, label="resample (tries per step)")
                seed = gr.Number(value=0, precision=0, label="seed")
                count = gr.Slider(1, 16, value=8, step=1, label="completions")
            button = gr.Button("Complete", variant="primary", elem_id="inpaint")
            status = gr.Markdown(elem_id="inpaint-status")
            out = gr.Image(label="result", type="numpy", image_mode="L")
            button.click(demo.inpaint, [source, index, drawing, keep, digit, resample, seed, count], [out, status])
        with gr.Tab("Interpolation"):
            with gr.Row():
                seed_a = gr.Number(value=0, precision=0, label="seed A")
                seed_b = gr.Number(value=1, precision=0, label="seed B")
                digit_a = gr.Dropdown(DIGIT_CHOICES, value="3", label="digit A")
                digit_b = gr.Dropdown(DIGIT_CHOICES, value="8", label="digit B")
                frames = gr.Slider(2, 16, value=10, step=1, label="frames")
            button = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
            status = gr.Markdown(elem_id="interpolate-status")
            out = gr.Image(label="from A to B", type="numpy", image_mode="L")
            button.click(demo.interpolate, [seed_a, seed_b, digit_a, digit_b, frames], [out, status])
    return app


def drive(url: str, screenshot: str | os.PathLike, chromium: str = CHROMIUM, timeout_s: float = 60) -> dict:
    """Open the demo at `url` in headless Chromium, click Generate, wait for its status line, save
    a screenshot of the page and return what the page showed: {"status": ..., "problem": ... or
    None, "image": uint8 array of the samples shown or None}."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url, timeout=timeout_s * 1000)
            page.click("#generate", timeout=timeout_s * 1000)
            # done when the status line is the handler's (while it runs, Gradio shows a timer there)
            page.wait_for_function("() => { const s = document.querySelector('#generate-status').innerText.trim();"
                                   " return s.startsWith('Error') || (s.includes('images') && "
                                   "document.querySelector('#samples img') !== null); }", timeout=timeout_s * 1000)
            text = page.locator("#generate-status").inner_text().strip()
            problem = page.locator("#problem")
            image = None
            if not text.startswith("Error"):
                data = page.evaluate("async (img) => Array.from(new Uint8Array(await (await fetch(img.src))"
                                     ".arrayBuffer()))", page.locator("#samples img").first.element_handle())
                image = np.asarray(Image.open(io.BytesIO(bytes(data))).convert("L"))
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return {"status": text, "problem": problem.inner_text() if problem.count() else None, "image": image}
        finally:
            browser.close()

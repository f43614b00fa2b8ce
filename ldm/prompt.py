"""What images are prompted with: a digit and a classifier-free guidance scale, decided once.

A `Prompt` is parsed, defaulted and validated when it is made, turns itself into the labels of
a sampling run, and names itself in reports; its guidance may be limited to an interval of noise
levels, and any branch, "none" included, may be autoguided by a weaker model (guidance.py); the
pipeline, the scripts, the studies and the samples files all take one rather than a digit and
a scale.

    digit 0-9   every image prompted with that digit, at PROMPT_GUIDANCE on PROMPT_GUIDANCE_INTERVAL
                unless told
    "all"       the digits 0-9 in turn
    "any"       digits drawn from the training label frequencies, at guidance 1: samples
                p(x) = Σ_y p(y) p(x | y) through the conditional branch (the default)
    "none"      the "no label" branch, which learns p(x) only from the dropped labels
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .data import NUM_CLASSES
from .errors import ConfigError, LdmError

DIGIT_PROMPTS = ("all", "any", "none")
# Guidance of digit prompts whose guidance is not given: the setting `make guidance` chose, the
# lowest FID with at least 99% of prompted digits recognised at every seed (docs/results.md): a
# scale, guiding only the steps whose half-log-SNR λ lies in the interval. A scale given alone
# guides every step.
PROMPT_GUIDANCE = 1.35
PROMPT_GUIDANCE_INTERVAL = (-2.0, 2.0)
# A model with a guide (a weaker UNet of the same run, guidance.autoguided) samples prompts whose
# settings are not given with these instead: the autoguidance weight of each branch, and for digit
# prompts a milder classifier-free guidance on the same interval: the choices of `make guidance`
# on `make all`'s UNet with its guide (docs/results.md, "With a guide"; paired, 2 seeds), the
# lowest FID, digits at >= 99% recognised at every seed. Random digits stay at guidance 1: on the
# guidance interval they lost (+0.9 FID at 1.1) where autoguidance at 1.25 won at both seeds.
GUIDED_AUTOGUIDANCE = {"none": 1.25, "any": 1.25, "digits": 1.5}
GUIDED_PROMPT_GUIDANCE = 1.25
# Scales in use run from 1 to about 10 (`make bench` measures 1-4); far above, the guided ε̂ is
# the difference of two predictions blown up, and the samples are saturated noise.
USUAL_GUIDANCE_MAX = 20.0


def interval_name(interval) -> str:
    """How reports write a guidance interval (low, high): "λ -2..2"."""
    return "λ {:g}..{:g}".format(*interval)


@dataclass(frozen=True)
class Prompt:
    digit: int | str = "any"  # 0-9 or one of DIGIT_PROMPTS; "7" is read as 7
    # None: 1 for "any", PROMPT_GUIDANCE (on PROMPT_GUIDANCE_INTERVAL) for digits; always None for "none"
    guidance: float | None = None
    # guide only where the half-log-SNR λ = log(α/σ) of a step lies in [low, high]; None: every step
    guidance_interval: tuple[float, float] | None = None
    # the weight w of autoguidance by a weaker model (guidance.autoguided); 1 (None): none
    autoguidance: float | None = None

    def __post_init__(self):
        digit = self.digit
        if digit not in DIGIT_PROMPTS:
            if str(digit) not in [str(d) for d in range(NUM_CLASSES)]:
                raise ConfigError("digit", digit, f"must be a digit 0-9 or one of {', '.join(DIGIT_PROMPTS)}")
            object.__setattr__(self, "digit", int(digit))
        guidance = self.guidance
        if self.digit == "none":
            if guidance is not None:
                warnings.warn(f"guidance {guidance:g} ignored: the \"no label\" branch is not guided")
            guidance = None
        elif guidance is None:
            guidance = 1.0 if self.digit == "any" else PROMPT_GUIDANCE
            if self.digit != "any" and self.guidance_interval is None:
                object.__setattr__(self, "guidance_interval", PROMPT_GUIDANCE_INTERVAL)
        elif not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 0):
            raise ConfigError("guidance", guidance, "must be a finite number >= 0")
        elif guidance > USUAL_GUIDANCE_MAX:
            warnings.warn(f"guidance {guidance:g} is far above the usual 1-10 (the samples will be saturated); "
                          "a mistake?")
        object.__setattr__(self, "guidance", None if guidance is None else float(guidance))
        object.__setattr__(self, "guidance_interval", self._checked_interval())
        weight = 1.0 if self.autoguidance is None else self.autoguidance
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 1):
            raise ConfigError("autoguidance", weight,
                              "must be a finite number >= 1 (1: the model alone; below, towards the weaker guide)")
        object.__setattr__(self, "autoguidance", float(weight))

    def _checked_interval(self) -> tuple[float, float] | None:
        interval = self.guidance_interval
        if interval is None:
            return None
        try:
            low, high = (float(v) for v in interval)
        except (TypeError, ValueError):
            raise ConfigError("guidance_interval", interval, "must be two numbers, low and high") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError("guidance_interval", interval, "must be two finite numbers, low < high")
        if self.scale == 1:
            warnings.warn("guidance interval ignored: this prompt is not guided (guidance 1, or the \"no label\" branch)")
            return None
        return low, high

    @classmethod
    def for_model(cls, digit: int | str | None, guidance: float | None, conditional: bool,
                  guidance_interval: tuple[float, float] | None = None, autoguidance: float | None = None,
                  guided: bool = False) -> "Prompt":
        """The prompt a model can take: unset `digit` is "any" for a class-conditional model and
        "none" for an unconditional one, which refuses any other. A `guided` model (one with a
        guide) fills unset settings from GUIDED_AUTOGUIDANCE and GUIDED_PROMPT_GUIDANCE."""
        digit = "any" if digit is None and conditional else "none" if digit is None else digit
        if guided:
            branch = digit if digit in ("any", "none") else "digits"
            if autoguidance is None:
                autoguidance = GUIDED_AUTOGUIDANCE[branch]
            if branch == "digits" and guidance is None and guidance_interval is None:
                guidance, guidance_interval = GUIDED_PROMPT_GUIDANCE, PROMPT_GUIDANCE_INTERVAL
        prompt = cls(digit, guidance, guidance_interval, autoguidance)
        if prompt.digit != "none" and not conditional:
            raise LdmError("this UNet is unconditional; it cannot be prompted with digits")
        return prompt

    @property
    def unconditional(self) -> bool:
        """Whether it samples the "no label" branch, the unconditional model."""
        return self.digit == "none"

    @property
    def scale(self) -> float:
        """The guidance scale samplers mix with (1, i.e. none, for the "no label" branch)."""
        return 1.0 if self.guidance is None else self.guidance

    def labels(self, num_images: int, seed: int, label_frequencies: list[float] | None) -> torch.Tensor | None:
        """[N] prompted digits, or None for the "no label" branch. "any" draws each digit
        independently from `label_frequencies` (how often it occurs in training) with `seed`."""
        if self.digit == "none":
            return None
        if self.digit == "any":
            if label_frequencies is None:
                raise LdmError("no label frequencies recorded with this UNet; retrain it with `make diffusion`")
            generator = torch.Generator().manual_seed(seed)
            return torch.multinomial(torch.tensor(label_frequencies, dtype=torch.float64), num_images,
                                     replacement=True, generator=generator)
        if self.digit == "all":
            return torch.arange(num_images) % NUM_CLASSES
        return torch.full((num_images,), self.digit)

    def name(self, conditional: bool = True) -> str:
        """How reports say it: "random digits", "digits 0-9, guidance 1.5", "digit 7, guidance 2",
        "digit 7, guidance 2 at λ -2..1", "no label", "no label, autoguidance 1.25" ("" for an
        unconditional model's unguided branch, which has no other)."""
        auto = [] if self.autoguidance == 1 else [f"autoguidance {self.autoguidance:g}"]
        if self.digit == "none":
            return ", ".join((["no label"] if conditional else []) + auto)
        prompt = {"all": "digits 0-9", "any": "random digits"}.get(self.digit, f"digit {self.digit}")
        if not (self.digit == "any" and self.guidance == 1):
            interval = "" if self.guidance_interval is None else f" at {interval_name(self.guidance_interval)}"
            prompt += f", guidance {self.guidance:g}{interval}"
        return ", ".join([prompt, *auto])

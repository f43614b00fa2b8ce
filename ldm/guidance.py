"""Class conditioning and classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598).

One denoiser learns both p(x | y) and p(x): during training a fraction of labels is replaced by
an extra "no label" entry, and at sampling time the two predictions are mixed,
    ε̃ = ε(x, ∅) + s·(ε(x, y) - ε(x, ∅)),
so s = 0 is unconditional, s = 1 plain conditional, s > 1 guided towards y. Any denoiser with
the signature model(x, t, labels) can be conditioned this way (the UNet, the toy MLP).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch

from .utils import ConfigError

# model(x [N x ...], t [N], labels [N] or None) -> ε̂ (or v̂) like x
ConditionalModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

# Guidance scale for digit prompts: the smallest measured scale at which the classifier
# recognises more than 97% of prompted digits (docs/results.md, `make bench`).
PROMPT_GUIDANCE = 1.5
# Scales in use run from 1 to about 10 (`make bench` measures 1-4); far above, the guided ε̂ is
# the difference of two predictions blown up, and the samples are saturated noise.
USUAL_GUIDANCE_MAX = 20.0


def check_guidance(scale: float) -> None:
    """Refuse a scale that is negative or not finite; warn about one far above any in use."""
    if not (math.isfinite(scale) and scale >= 0):
        raise ConfigError("guidance", scale, "must be a finite number >= 0")
    if scale > USUAL_GUIDANCE_MAX:
        warnings.warn(f"guidance {scale:g} is far above the usual 1-10 (the samples will be saturated); "
                      "a mistake?", stacklevel=3)


def drop_labels(labels: torch.Tensor, num_classes: int, p: float) -> torch.Tensor:
    """Replace each label by the "no label" index `num_classes` with probability p."""
    drop = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def guided_model(model: ConditionalModel, labels: torch.Tensor | None, scale: float,
                 num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An (x, t) -> ε̃ denoiser that samplers can use unchanged.

    labels None gives unconditional samples. The conditional and unconditional passes share one
    batch of 2N so guidance costs one (larger) forward per step.
    """
    check_guidance(scale)
    if labels is None or scale == 0:
        return lambda x, t: model(x, t, None)
    if scale == 1:
        return lambda x, t: model(x, t, labels)
    null = torch.full_like(labels, num_classes)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return uncond + scale * (cond - uncond)

    return eps

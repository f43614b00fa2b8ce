"""Class conditioning and classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598).

One denoiser learns both p(x | y) and p(x): during training a fraction of labels is replaced by
an extra "no label" entry, and at sampling time the two predictions are mixed,
    ε̃ = ε(x, ∅) + s·(ε(x, y) - ε(x, ∅)),
so s = 0 is unconditional, s = 1 plain conditional, s > 1 guided towards y. Any denoiser with
the signature model(x, t, labels) can be conditioned this way (the UNet, the toy MLP).

Guidance can be limited to an interval of noise levels (Kynkäänniemi et al. 2024,
arXiv:2404.07724): at high noise it pulls every sample of a class towards the same few shapes
and costs diversity, at low noise it changes little; outside the interval the step is plainly
conditional, one forward pass of N.

Autoguidance (Karras et al. 2024, arXiv:2406.02507, eq. 2) guides a denoiser with a weaker
version of itself (smaller, trained for less) at the same condition,
    D_w(x | c) = D_guide(x | c) + w·(D(x | c) - D_guide(x | c)),
which, unlike classifier-free guidance, also guides the "no label" branch. Both compose: the
classifier-free mix is taken of autoguided predictions. ε̂ and v̂ are affine in D at a given
(x, t), so mixing them is mixing D.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# model(x [N x ...], t [N], labels [N] or None) -> ε̂ (or v̂) like x
ConditionalModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def drop_labels(labels: torch.Tensor, num_classes: int, p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the "no label" index `num_classes` with probability p; the draws come
    from the global RNG on the labels' device, or from a CPU `generator`."""
    if generator is None:
        draws = torch.rand(labels.shape, device=labels.device)
    else:
        draws = torch.rand(labels.shape, generator=generator).to(labels.device)
    return torch.where(draws < p, torch.full_like(labels, num_classes), labels)


def autoguided(model: ConditionalModel, guide: ConditionalModel | None, weight: float) -> ConditionalModel:
    """`model` guided by the weaker `guide` with weight w (the module docstring); w = 1 (or no
    guide) is `model` itself, w = 0 the guide."""
    if guide is None or weight == 1:
        return model

    def denoise(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        weak = guide(x, t, labels)
        return weak + weight * (model(x, t, labels) - weak)

    return denoise


def no_label_like(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The "no label" entry in the form of `labels`: index `num_classes` for [N] ints, its one-hot
    weights for [N x (num_classes + 1)] mixes of entries."""
    if labels.is_floating_point():
        return F.one_hot(torch.full(labels.shape[:1], num_classes, device=labels.device), num_classes + 1).to(labels)
    return torch.full_like(labels, num_classes)


def guided_model(model: ConditionalModel, labels: torch.Tensor | None, scale: float, num_classes: int,
                 guided_steps: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An (x, t) -> ε̃ denoiser that samplers can use unchanged.

    labels None gives unconditional samples; labels may be ints [N] or mixes of label entries
    [N x (num_classes + 1)] (nn.LabelEmbedding). The conditional and unconditional passes share one
    batch of 2N so guidance costs one (larger) forward per step. `guided_steps` (bool [T]) limits
    guidance to the timesteps it marks; the others are conditional. Samplers evaluate one
    timestep per call, so the first example's decides. The scale is validated where a prompt is
    made (prompt.py).
    """
    if labels is None or scale == 0:
        return lambda x, t: model(x, t, None)
    if scale == 1:
        return lambda x, t: model(x, t, labels)
    null = no_label_like(labels, num_classes)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guided_steps is not None and not guided_steps[t[0]]:
            return model(x, t, labels)
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
        return uncond + scale * (cond - uncond)

    return eps

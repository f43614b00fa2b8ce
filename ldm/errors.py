"""The project's errors and the checks that raise them where a setting is defined.

`LdmError` is a problem with the user's input (a file, an option), which scripts print as one
line; `ConfigError` is a setting outside its domain, named by its field so that `ldm.cli` can
name the flag that set it.
"""

from __future__ import annotations

import math

import torch


class LdmError(Exception):
    """A problem with the user's input (a file, an option); scripts print it as one line."""


class ConfigError(LdmError, ValueError):
    """A setting outside its domain, raised once, where the setting is defined. `field` is the
    setting's name in its config or call; `ldm.cli` turns it into the flag that set it."""

    def __init__(self, field: str, value, reason: str):
        super().__init__(f"{field}={value}: {reason}")
        self.field, self.value, self.reason = field, value, reason


def is_number(value) -> bool:
    """A finite int or float from JSON or a caller (not a bool, a string, None, NaN or ±inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(**fields) -> None:
    """Refuse a size (a width, a count, a weight) that is not > 0."""
    for field, value in fields.items():
        for v in value if isinstance(value, tuple) else (value,):
            if not v > 0:
                raise ConfigError(field, value, "must be positive")


def check_fraction(field: str, value: float) -> None:
    """Refuse a probability outside [0, 1), such as a dropout rate."""
    if not 0 <= value < 1:
        raise ConfigError(field, value, "must be in [0, 1)")


def check_choice(field: str, value, choices) -> None:
    """Refuse a mode outside its closed set, listing the valid ones."""
    if value not in choices:
        raise ConfigError(field, value, f"choose one of {', '.join(map(str, choices))}")


def check_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor`, or one LdmError saying that `what` holds NaN or infinity."""
    if not torch.isfinite(tensor).all():
        raise LdmError(f"{what} not finite (NaN or infinite values)")
    return tensor

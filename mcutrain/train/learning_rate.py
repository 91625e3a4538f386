"""The one rule for a learning rate, shared by every command and library function that takes one.

A learning rate must be a finite number > 0 that stays finite and non-zero as a float32: the int8
optimizer and the generated C apply it in float32 (``np.float32(1e39)`` is inf, ``np.float32(1e-46)``
is 0), and NaN or inf passes a plain ``lr <= 0`` test (every comparison with NaN is false) and then
turns every trained weight into NaN.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mcutrain.errors import McutrainError

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)


class LearningRateError(McutrainError):
    """A learning rate that is not a finite positive float32."""


def check_learning_rate(lr, name: str = "--lr") -> float:
    """``lr`` as a float, or a ``LearningRateError`` naming ``name`` and the allowed range."""
    problem = learning_rate_problem(lr)
    if problem:
        raise LearningRateError(f"{name} {problem}")
    return float(lr)


def learning_rate_problem(lr) -> str | None:
    """What is wrong with ``lr`` ("must be ..., got ..."), or None when it is a valid learning rate."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        return f"must be a number, got {lr!r}"
    value = float(lr)
    if not math.isfinite(value) or not FLOAT32_TINY <= value <= FLOAT32_MAX:
        return (f"must be a finite number > 0 (between {FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g}, "
                f"float32's range), got {value!r}")
    return None

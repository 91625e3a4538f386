"""How uint8 pixels become the float network input; stored in checkpoints.

``x = (p - offset) * scale``. The default (offset 128, scale 1/128) maps 0..255 to [-1, 0.992] and
makes the int8 model's input exactly ``p - 128`` with input scale 1/128 and zero point 0, so the
float, the simulated int8 and the C executors all see the same numbers. Kept free of torch so that
checkpoint and CLI code can read it cheaply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from mcutrain.errors import DataError

MAX_OFFSET = 255.0
MAX_SCALE = 1.0


@dataclass(frozen=True)
class Preprocessing:
    """``x = (pixel - offset) * scale`` for uint8 pixels."""

    offset: float = 128.0
    scale: float = 1.0 / 128.0

    def __post_init__(self) -> None:
        # Pixels are 0..255: an offset outside that range, or a scale above 1 (inputs beyond +-255),
        # is no preprocessing anyone meant; from a file it is a forged or corrupt record.
        if not (math.isfinite(self.offset) and math.isfinite(self.scale) and self.scale > 0):
            raise DataError(f"preprocessing needs a finite offset and a positive scale, "
                            f"got offset={self.offset} scale={self.scale}")
        if not (0.0 <= self.offset <= MAX_OFFSET and self.scale <= MAX_SCALE):
            raise DataError(f"preprocessing offset must be 0 to {MAX_OFFSET:g} and scale at most {MAX_SCALE:g}, "
                            f"got offset={self.offset} scale={self.scale}")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        unknown = set(d) - {"offset", "scale"}
        if unknown:
            raise DataError(f"unknown preprocessing field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**{k: float(v) for k, v in d.items()})
        except (TypeError, ValueError) as err:
            raise DataError(f"bad preprocessing record {d!r}: {err}") from None

    def apply(self, pixels):
        """Pixels (any float tensor/array in 0..255) -> network input."""
        return (pixels - self.offset) * self.scale

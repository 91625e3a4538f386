"""Memory budgets as people write them ("200KB", "256KiB", "1MB", "204800") and the smallest one that works.

Units: KB and KiB both mean 1024 bytes, MB and MiB 1024 * 1024 (the paper names its schemes in
1024-byte KB, ``sparse.analytic.KB``, and the target's "256 KB SRAM" / "1 MB Flash" are binary too);
a plain number, or one ending in B, is bytes. Decimals are allowed ("62.5KB" = 64000 bytes) and the
result is rounded down to whole bytes.
"""

from __future__ import annotations

import re

from mcutrain.errors import McutrainError

KB = 1024
UNITS = {"": 1, "b": 1, "kb": KB, "kib": KB, "k": KB, "mb": KB * KB, "mib": KB * KB, "m": KB * KB}
_BUDGET_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


class BudgetError(McutrainError):
    """A budget that cannot be read, or one no scheme fits."""


MAX_BUDGET_BYTES = 2**40  # far above any microcontroller; keeps byte counts exact integers


def parse_bytes(text: str | int, what: str = "budget") -> int:
    """Bytes of "200KB" / "256KiB" / "1MB" / "204800" (KB = KiB = 1024 bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _BUDGET_RE.fullmatch(str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in UNITS:
            raise BudgetError(f"{what}: cannot read {text!r}; write bytes (204800) or a number with a unit: "
                              f"B, KB or KiB (1024 B), MB or MiB (1024 KB), e.g. 200KB")
        scaled = float(m.group(1)) * UNITS[unit]
        if not scaled <= MAX_BUDGET_BYTES:  # also inf and NaN
            raise BudgetError(f"{what}: {text!r:.40} is over the limit of {MAX_BUDGET_BYTES} bytes (1 TiB)")
        value = int(scaled)
    if value <= 0 or value > MAX_BUDGET_BYTES:
        raise BudgetError(f"{what} must be a positive number of bytes up to {MAX_BUDGET_BYTES} (1 TiB), "
                          f"got {text!r:.40}")
    return value


def kb(nbytes: int) -> str:
    return f"{nbytes / KB:.1f} KB"


def check_minimum(what: str, budget: int, minimum: int, model: str) -> None:
    """Refuse a budget below the smallest feasible scheme (the classifier only), saying by how much."""
    if budget < minimum:
        raise BudgetError(f"{what} {budget} bytes ({kb(budget)}) is below the smallest feasible scheme of "
                          f"{model}: training the classifier only needs {minimum} bytes ({kb(minimum)}), "
                          f"{minimum - budget} bytes ({kb(minimum - budget)}) more than the budget")

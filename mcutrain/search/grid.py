"""Which runs a contribution analysis makes: the bias grid, the candidate layers and the ratios.

Selections are text (what a user types) or sequences (what a program passes), resolved against the
model's convs so every error names the model's valid range:

  layers     comma-separated conv indices, inclusive ranges ``30..41`` (or ``30-41``), conv names
             (``blocks.12.pointwise1``) and ``last:N`` (the last N convs);
             default: every conv in the last half of the network (``range(n // 2, n)``), where the
             paper found the contributions.
  ratios     comma-separated from 1/8, 1/4, 1/2, 1 (``0.125`` or ``1/8``); default: all four.
  bias grid  comma-separated k (number of last convs whose bias is updated) and ranges;
             default: the geometric grid 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, ... below n, plus n
             (all convs). Fine where contributions change fast (few layers), coarse where a deep
             bias run costs a full-network fine-tune; ``predicted_gain`` interpolates in between.
The bias runs the weight runs need (k = n - i for each candidate i) are always added to the grid.
Layers resolve against a ``sparse.table.ConvTable`` (a zoo architecture's convs or an imported
graph's); a ``NetSpec`` is taken as its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from mcutrain.errors import McutrainError
from mcutrain.models.specs import NetSpec
from mcutrain.sparse.errors import SchemeError
from mcutrain.sparse.scheme import ALLOWED_RATIOS
from mcutrain.sparse.table import ConvTable, as_table

Selection = str | Sequence[int | str | float] | None


def default_layers(n_convs: int) -> tuple[int, ...]:
    """The last half of the network: later layers are where the paper found the gains."""
    return tuple(range(n_convs // 2, n_convs))


def default_bias_grid(n_convs: int) -> tuple[int, ...]:
    """1, 2, 3, 4, 6, 8, 12, ... (powers of two and 1.5x them) below n, and n: geometric, so the
    expensive deep runs stay few while the shallow end, where accuracy moves most, is dense."""
    grid, p = {n_convs}, 1
    while p < n_convs:
        grid.update(k for k in (p, p + p // 2) if 0 < k < n_convs)
        p *= 2
    return tuple(sorted(grid))


def select_layers(selection: Selection, convs: ConvTable | NetSpec) -> tuple[int, ...]:
    """Candidate conv indices for weight runs, sorted and unique."""
    table = as_table(convs)
    n = len(table.names)
    if selection is None or selection == "" or selection == ():
        return default_layers(n)
    out: set[int] = set()
    for item in _items(selection):
        out.update(_layer_item(item, table, n))
    return tuple(sorted(out))


def _layer_item(item: int | str, table: ConvTable, n: int) -> tuple[int, ...]:
    if isinstance(item, str) and item in table.names:  # an imported conv's name may hold "-" or ".."
        return (table.names.index(item),)
    if isinstance(item, str) and item.startswith("last:"):
        count = _int(item[5:], "--layers last:N")
        if not 1 <= count <= n:
            raise McutrainError(f"--layers {item}: N must be 1..{n} ({table.label} has {n} convs)")
        return tuple(range(n - count, n))
    bounds = _range(item) if isinstance(item, str) else None
    if bounds is not None:
        lo, hi = (_layer(b, table) for b in bounds)
        if lo > hi:
            raise McutrainError(f"--layers {item}: the range is empty (write low..high)")
        return tuple(range(lo, hi + 1))
    return (_layer(item, table),)


def _layer(item: int | str, table: ConvTable) -> int:
    ref = int(item) if isinstance(item, str) and item.lstrip("-").isdigit() else item
    try:
        return table.index(ref, "--layers")
    except SchemeError as err:
        raise McutrainError(str(err)) from None


def select_ratios(selection: Selection) -> tuple[float, ...]:
    """Weight ratios, each one of ALLOWED_RATIOS; fractions like ``1/8`` are accepted."""
    if selection is None or selection == "" or selection == ():
        return ALLOWED_RATIOS
    out = set()
    for item in _items(selection):
        try:
            value = float(Fraction(str(item).strip()))
        except (ValueError, ZeroDivisionError):
            value = None
        if value not in ALLOWED_RATIOS:
            raise McutrainError(f"--ratios: {item!r} is not a ratio; use 1/8, 1/4, 1/2, 1 "
                                f"(or 0.125, 0.25, 0.5, 1)")
        out.add(value)
    return tuple(sorted(out))


def select_bias_grid(selection: Selection, n_convs: int) -> tuple[int, ...]:
    """The k of the bias runs (1..n); the caller adds the ones the weight runs need."""
    if selection is None or selection == "" or selection == ():
        return default_bias_grid(n_convs)
    out: set[int] = set()
    for item in _items(selection):
        bounds = _range(item) if isinstance(item, str) else None
        lo, hi = ((_int(b, "--bias-grid") for b in bounds) if bounds else (_int(item, "--bias-grid"),) * 2)
        if not 1 <= lo <= hi <= n_convs:
            raise McutrainError(f"--bias-grid {item}: k must be 1..{n_convs} (the number of convs); "
                                f"k = 0 is the classifier-only baseline, which always runs")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def _items(selection: str | Sequence) -> list:
    if isinstance(selection, str):
        items = [s.strip() for s in selection.split(",")]
        if any(not s for s in items):
            raise McutrainError(f"empty item in the list {selection!r} (write a,b,c)")
        return items
    return list(selection)


def _range(text: str) -> tuple[str, str] | None:
    """``a..b`` or ``a-b`` (not a negative number), else None."""
    for sep in ("..", "-"):
        lo, found, hi = text.partition(sep)
        if found and lo and hi:
            return lo.strip(), hi.strip()
    return None


def _int(value, where: str) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise McutrainError(f"{where}: {value!r} is not an integer") from None


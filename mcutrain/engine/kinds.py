"""The op-kind registry: every piece of every op kind, gathered in one place and checked complete.

Why: an op kind is defined by six pieces that live next to the code that uses them (its output types
in ``ops.OUTPUT_TYPES``, its VJP in ``autodiff.VJP_RULES``, its in-place rule in
``passes.inplace.INPLACE_RULES``, its scratch in ``lifetimes.SCRATCH_RULES``, its NumPy kernel in
``executor`` (``KERNELS``, or ``ARENA_KERNELS`` for the fused kinds that work in the arena) and its C
emitter in ``codegen.emitters.EMITTERS``). A kind added to one table and forgotten in another failed
late (a ``KeyError`` in the executor, "no C kernel" at generate time). ``registry()`` gathers them into
one frozen ``OpKind`` per kind of the catalogue, and ``incomplete()`` names every piece a kind lacks
(and every table entry for a kind the catalogue does not have); the tests assert it is empty.

A kind with no VJP must say why (``NO_VJP``): backward and update ops are never differentiated, the
fused kinds are made after autodiff, the loss seeds the backward. In-place rules and scratch are
optional by nature (most kinds write a fresh buffer and need no scratch): ``None`` / ``()`` there is a
definition, not a gap. The emitters are looked up when the registry is built (``codegen`` builds on
the engine, so this module imports it lazily, not at import time). The integer backward's kinds
(``ops.INT8_BACKWARD_TYPES``, ``--backward int8``) are complete here too; their emitter, for now, is
one that raises "int8 backward: C kernels not generated yet" (``codegen.emitters.emit_int8_backward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mcutrain.engine.autodiff import VJP, VJP_RULES
from mcutrain.engine.executor.arena_kernels import ARENA_KERNELS
from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.lifetimes import SCRATCH_RULES
from mcutrain.engine.ops import INT8_BACKWARD_TYPES, OUTPUT_TYPES
from mcutrain.engine.passes.inplace import INPLACE_RULES

__all__ = ["NO_VJP", "OpKind", "incomplete", "registry"]

_BACKWARD = "a backward / update op: never differentiated"
_FUSED = "fused after autodiff from differentiated ops"
NO_VJP: dict[str, str] = {
    "pointwise_depthwise": _FUSED, "mbconv_rows": _FUSED, "mbconv_grad": _FUSED,
    "softmax_ce": "the loss: its gradient seeds the backward (autodiff.differentiate)",
    "slice_channels": "made by autodiff itself (the kept channels of a partial weight gradient's input)",
    **{k: _BACKWARD for k in ("linear_grad_x", "linear_grad_w", "linear_grad_b", "avgpool_grad", "add_grad",
                              "requant_grad", "conv2d_grad_x", "conv2d_grad_w", "conv2d_grad_b", "grad_sum",
                              "update_weight", "update_bias", "conv2d_grad_w_update", "linear_grad_w_update",
                              "tfl_avgpool_grad", "tfl_maxpool_grad", "reshape_grad")},
    **{k: _BACKWARD for k in INT8_BACKWARD_TYPES},
}


@dataclass(frozen=True)
class OpKind:
    name: str
    output_types: Callable | None  # (graph, op) -> [(shape, dtype), ...]
    vjp: VJP | None  # None: ``no_vjp`` says why
    no_vjp: str | None
    inplace: tuple  # (input positions, how) rules; (): always a fresh buffer
    scratch: Callable | None  # (graph, op) -> bytes; None: no scratch
    kernel: Callable | None  # the NumPy executor's kernel
    arena_kernel: bool  # the kernel works in the arena (``ARENA_KERNELS``)
    emitter: Callable | None  # the C emitter


def _emitters() -> dict[str, Callable]:
    from mcutrain.codegen.emitters import EMITTERS  # codegen builds on the engine: imported on demand
    return EMITTERS


def registry(catalogue: dict | None = None, emitters: dict | None = None) -> dict[str, OpKind]:
    """One ``OpKind`` per kind of the catalogue (``ops.OUTPUT_TYPES`` unless given)."""
    catalogue = OUTPUT_TYPES if catalogue is None else catalogue
    emitters = _emitters() if emitters is None else emitters
    kinds = {}
    for name in catalogue:
        arena = name in ARENA_KERNELS
        kinds[name] = OpKind(name, catalogue.get(name), VJP_RULES.get(name), NO_VJP.get(name),
                             INPLACE_RULES.get(name, ()), SCRATCH_RULES.get(name),
                             ARENA_KERNELS[name] if arena else KERNELS.get(name), arena, emitters.get(name))
    return kinds


def incomplete(catalogue: dict | None = None, emitters: dict | None = None) -> dict[str, list[str]]:
    """Kind -> the pieces it lacks (or, for a kind outside the catalogue, the tables that name it)."""
    catalogue = OUTPUT_TYPES if catalogue is None else catalogue
    emitters = _emitters() if emitters is None else emitters
    missing: dict[str, list[str]] = {}
    for name, kind in registry(catalogue, emitters).items():
        gaps = [piece for piece, value in (("output_types", kind.output_types), ("kernel", kind.kernel),
                                            ("emitter", kind.emitter)) if value is None]
        if (kind.vjp is None) == (kind.no_vjp is None):
            gaps.append("vjp (a rule, or a reason in NO_VJP: exactly one)")
        if gaps:
            missing[name] = gaps
    tables = {"VJP_RULES": VJP_RULES, "NO_VJP": NO_VJP, "INPLACE_RULES": INPLACE_RULES,
              "SCRATCH_RULES": SCRATCH_RULES, "KERNELS": KERNELS, "ARENA_KERNELS": ARENA_KERNELS,
              "EMITTERS": emitters}
    for table, entries in tables.items():
        for name in entries:
            if name not in catalogue:
                missing.setdefault(name, []).append(f"in {table} but not in the catalogue")
    return missing

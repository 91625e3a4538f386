"""The typed, resolved program of a channel-by-channel block backward (``mbconv_grad``), lowered once.

Why a module of its own: the fused op is not one kernel but a small program (a per-channel loop over
the chain's parts, pre / post phases over the lazily computed source, recomputed forward masks, a
scratch of a few channels of each gradient). Before, its step roles (head / lazy head / depthwise /
tail, ...), its scratch layout and its recomputed forward were derived again by every reader (the
pass sized the scratch, the NumPy kernel and the C emitter each laid it out and told the roles apart
by tests of their own). Now ``fuse_backward`` lowers the chain ONCE into a ``GradProgram`` stored on
the op (attribute ``program``), and the verifier, ``lifetimes`` (scratch bytes), the NumPy kernel and
the C emitter all read it and derive nothing again.

A program holds:
  steps / pre / post  typed steps: a role (one of ``ROLES``), the part op, and its operands resolved
                      to where they live (``Operand.place``: an op input, the lazy source, a scratch
                      slot, an op output, a value of the current channel, a weight gradient that its
                      update computes element by element)
  recompute           the forward convs re-run per channel for their masks (``Recompute``: a field,
                      not a tensor-name suffix to parse)
  scratch             the layout (``ScratchLayout``): each slot's bytes per channel, its offset when
                      ``group`` channels run together (the NumPy kernel) and its offset for one channel;
                      the C loop runs ``pass_channels`` channels per pass, channel k's slots
                      ``pass_stride`` bytes after channel 0's; the lazy source's rows; the total (what
                      the planner charges: the larger of the two batches, plus the source rows)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcutrain.engine.ir import Op, TensorInfo

GROUP_BYTES = 512  # scratch for the channels run together (the NumPy kernel's batch)
PASS_CHANNELS = 2  # expanded channels per pass of the C loop (c/mct_fused_pair.c shares their loads)

# step roles
HEAD = "head"  # 1x1 conv input gradient from a whole gradient of the arena (channels of the expansion)
LAZY_HEAD = "lazy_head"  # the same from the lazily computed source (the spread, requantized pool gradient)
DEPTHWISE_X = "depthwise_x"  # depthwise conv input gradient, channel by channel
TAIL = "tail"  # 1x1 conv input gradient accumulated over the expanded channels into an output
REQUANT = "requant"  # clamp mask and multiplier, in place
BIAS_GRAD = "bias_grad"  # sum of a channel's gradient
UPDATE_BIAS = "update_bias"
WEIGHT_GRAD = "weight_grad"  # one row of a weight gradient
WEIGHT_GRAD_UPDATE = "weight_grad_update"  # one row of a weight gradient applied at once (fused update)
UPDATE_WEIGHT = "update_weight"  # a row of a weight gradient applied (or computed and applied: deferred)
ROLES = (HEAD, LAZY_HEAD, DEPTHWISE_X, TAIL, REQUANT, BIAS_GRAD, UPDATE_BIAS, WEIGHT_GRAD, WEIGHT_GRAD_UPDATE,
         UPDATE_WEIGHT)

# operand places
INPUT = "input"  # an input of the fused op (a whole arena tensor, a parameter, a constant)
LAZY = "lazy"  # the lazily computed source (rows made on demand)
SCRATCH = "scratch"  # a slot of the op's scratch (``Operand.slot``)
OUTPUT = "output"  # an output of the fused op (its channel rows written as they are made)
LOCAL = "local"  # a value of the current channel(s) only (a bias gradient's sum, a weight gradient row)
DEFERRED = "deferred"  # a weight gradient read by its update only: computed there, element by element
PLACES = (INPUT, LAZY, SCRATCH, OUTPUT, LOCAL, DEFERRED)

# scratch slot kinds
FLOAT_PLANE, INT8_PLANE, MASK_BITS = "float_plane", "int8_plane", "mask_bits"


@dataclass(frozen=True)
class Operand:
    name: str
    place: str
    slot: str | None = None  # the scratch slot it occupies (SCRATCH only; a requant writes over its input's)


@dataclass(frozen=True)
class Step:
    role: str
    op: Op
    grad: Operand  # the gradient it reads
    out: Operand | None = None  # what it makes (None: an update)
    mask: Operand | None = None  # REQUANT: the clamp mask (an input, or recomputed bits in a scratch slot)


@dataclass(frozen=True)
class ScratchSlot:
    tensor: str
    kind: str  # FLOAT_PLANE | INT8_PLANE | MASK_BITS
    shape: tuple[int, ...]  # one channel's shape (its plane: rows, columns)
    plane: int  # elements of one channel
    per_channel: int  # bytes of one channel
    offset: int  # byte offset when ``group`` channels run together (``group * per_channel`` bytes)
    channel_offset: int  # byte offset when one channel runs at a time (the C loop)


@dataclass(frozen=True)
class ScratchLayout:
    slots: tuple[ScratchSlot, ...]
    group: int  # channels run together
    per_channel: int  # bytes of one channel of every slot
    source_group: int  # rows of the lazy source computed together (0: no lazy source)
    source_row: int  # bytes of one row of the lazy source
    pass_channels: int  # channels per pass of the C loop
    pass_stride: int  # bytes from one pass channel's slots to the next's (float planes stay 4-aligned)
    total: int  # what the planner reserves: max(group * per_channel, pass_bytes) + source_group * source_row

    def slot(self, tensor: str) -> ScratchSlot:
        return next(s for s in self.slots if s.tensor == tensor)

    @property
    def pass_bytes(self) -> int:
        """The C loop's scratch: ``pass_channels`` channels of every slot."""
        return self.pass_channels * self.pass_stride

    def pass_offset(self, slot: ScratchSlot, k: int) -> int:
        """Byte offset of channel k (< pass_channels) of a pass of the C loop in ``slot``."""
        return slot.channel_offset + k * self.pass_stride


@dataclass(frozen=True)
class Recompute:
    """The forward convs whose masks the op recomputes per channel from the block input."""
    convs: tuple[Op, ...]  # (expand,) or (expand, depthwise); outputs (recomputed plane, mask)
    plane: str  # the recomputed expand output (one channel in the scratch: INT8_PLANE)
    forward: tuple[str, ...]  # the names of the forward ops they re-run (which now output no mask)

    @property
    def masks(self) -> tuple[str, ...]:
        return tuple(c.outputs[1] for c in self.convs)

    @property
    def made(self) -> frozenset[str]:
        return frozenset(o for c in self.convs for o in c.outputs)


@dataclass(frozen=True, repr=False)
class GradProgram:
    channels: int
    lazy: tuple[Op, ...]  # ops of the lazily computed source (avgpool_grad, requant_grad)
    source: str | None  # the lazily computed tensor
    steps: tuple[Step, ...]  # per expanded channel, in order
    pre: tuple[Step, ...]  # over the source's channels, before the loop
    post: tuple[Step, ...]  # over the source's channels, after it
    recompute: Recompute | None
    scratch: ScratchLayout

    @property
    def parts(self) -> tuple[Op, ...]:
        return tuple(s.op for s in self.steps)

    @property
    def all_ops(self) -> tuple[Op, ...]:
        """Every op the fused op stands for: lazy source, pre phase, chain, post phase."""
        return self.lazy + tuple(s.op for s in self.pre + self.steps + self.post)

    def __repr__(self) -> str:  # printed graphs: a summary, not every part
        return (f"GradProgram({len(self.steps)} steps, {len(self.pre)}+{len(self.post)} source steps, "
                f"scratch {self.scratch.total} B)")


def program_of(op: Op):
    """The program a fused op carries (``GradProgram`` of an ``mbconv_grad``, ``RowsProgram`` of an
    ``mbconv_rows``)."""
    return op.attr("program")


def lower_grad(tensor, channels: int, parts: list[Op], lazy: list[Op], pre: list[Op], post: list[Op],
               recompute: tuple[Op, ...], forward: tuple[str, ...], outputs: tuple[str, ...]) -> GradProgram:
    """The program of a fused chain. ``tensor(name)``: the TensorInfo of a graph tensor (the chain's
    tensors are still graph tensors when the pass lowers it); ``recompute``: the convs re-run per
    channel, ``forward`` the names of the forward ops they stand for; ``outputs``: the fused op's."""
    rec = Recompute(tuple(recompute), recompute[0].outputs[0], tuple(forward)) if recompute else None
    source = lazy[-1].outputs[0] if lazy else None
    outs = set(outputs)
    layout = _layout(tensor, channels, parts, rec, outs, source)
    resolver = _Resolver(layout, outs, source, rec)
    steps = tuple(resolver.step(p) for p in parts)
    source_steps = []
    for phase in (pre, post):
        phase_resolver = _Resolver(layout, outs, source, rec, phase=True)
        source_steps.append(tuple(phase_resolver.step(p) for p in phase))
    return GradProgram(channels, tuple(lazy), source, steps, source_steps[0], source_steps[1], rec, layout)


def _plane(t: TensorInfo) -> int:
    return t.numel // t.shape[1]


def _layout(tensor, channels: int, parts: list[Op], rec: Recompute | None, outs: set, source: str | None
            ) -> ScratchLayout:
    """One channel of each float gradient the chain keeps (the head's and each depthwise input
    gradient not read outside), then the recomputed expand plane (int8) and each recomputed mask's
    bits; ``group`` channels of all of them fit in ``GROUP_BYTES`` (the NumPy kernel's batch), the C
    loop's ``PASS_CHANNELS`` (fewer when the block has fewer) take what they take; then rows of the lazy
    source."""
    entries = []  # (tensor, kind, one channel's shape, bytes per channel)
    for op in parts:
        if op.kind == "conv2d_grad_x" and op.outputs[0] not in outs:
            t = tensor(op.outputs[0])
            entries.append((op.outputs[0], FLOAT_PLANE, t.shape[2:], 4 * _plane(t)))
    if rec is not None:
        t = tensor(rec.convs[0].outputs[1])
        entries.append((rec.plane, INT8_PLANE, t.shape[2:], _plane(t)))
        for conv in rec.convs:
            t = tensor(conv.outputs[1])
            entries.append((conv.outputs[1], MASK_BITS, t.shape[2:], -(-_plane(t) // 8)))
    per_channel = sum(e[3] for e in entries)
    group = max(1, min(channels, GROUP_BYTES // max(per_channel, 1)))
    slots, offset, channel_offset = [], 0, 0
    for name, kind, shape, size in entries:
        slots.append(ScratchSlot(name, kind, tuple(shape), int(np.prod(shape, dtype=np.int64)), size, offset,
                                 channel_offset))
        offset += group * size
        channel_offset += size
    source_group = source_row = 0
    if source is not None:
        t = tensor(source)
        source_row = 4 * _plane(t)
        source_group = max(1, min(t.shape[1], GROUP_BYTES // source_row))
    pass_channels, pass_stride = min(PASS_CHANNELS, channels), -(-per_channel // 4) * 4
    batch = max(group * per_channel, pass_channels * pass_stride)
    return ScratchLayout(tuple(slots), group, per_channel, source_group, source_row, pass_channels, pass_stride,
                         batch + source_group * source_row)


class _Resolver:
    """Gives each part its role and resolves its operands, in the chain's order."""

    def __init__(self, layout: ScratchLayout, outs: set, source: str | None, rec: Recompute | None,
                 phase: bool = False):
        self.outs, self.source = outs, source
        self.slots = {s.tensor for s in layout.slots}
        self.masks = set(rec.masks) if rec is not None else set()
        self.where: dict[str, Operand] = {}  # chain tensors made so far
        if phase and source is not None:
            self.where[source] = Operand(source, LAZY)

    def read(self, name: str) -> Operand:
        if name in self.where:
            return self.where[name]
        if name == self.source:
            return Operand(name, LAZY)
        return Operand(name, INPUT)

    def made(self, name: str, place: str, slot: str | None = None) -> Operand:
        self.where[name] = Operand(name, place, slot)
        return self.where[name]

    def plane_out(self, name: str) -> Operand:
        if name in self.outs:
            return self.made(name, OUTPUT)
        if name in self.slots:
            return self.made(name, SCRATCH, name)
        return self.made(name, LOCAL)

    def step(self, op: Op) -> Step:
        kind = op.kind
        if kind == "conv2d_grad_x":
            grad = self.read(op.inputs[0])
            if op.attr("groups") > 1:
                role = DEPTHWISE_X
            elif grad.place in (INPUT, LAZY):
                role = LAZY_HEAD if grad.place == LAZY else HEAD
            else:
                role = TAIL
            out = self.made(op.outputs[0], OUTPUT) if role == TAIL else self.plane_out(op.outputs[0])
            return Step(role, op, grad, out)
        if kind == "requant_grad":  # in place, element by element: over its input's scratch slot
            grad = self.read(op.inputs[0])
            mask_name = op.inputs[1]
            mask = Operand(mask_name, SCRATCH, mask_name) if mask_name in self.masks else Operand(mask_name, INPUT)
            if op.outputs[0] in self.outs:
                out = self.made(op.outputs[0], OUTPUT)
            elif grad.place == SCRATCH:
                out = self.made(op.outputs[0], SCRATCH, grad.slot)
            else:
                out = self.made(op.outputs[0], LOCAL)
            return Step(REQUANT, op, grad, out, mask)
        if kind == "conv2d_grad_b":
            out = op.outputs[0]
            return Step(BIAS_GRAD, op, self.read(op.inputs[0]), self.made(out, OUTPUT if out in self.outs else LOCAL))
        if kind == "update_bias":
            return Step(UPDATE_BIAS, op, self.read(op.inputs[1]))
        if kind == "conv2d_grad_w":
            out = op.outputs[0]
            return Step(WEIGHT_GRAD, op, self.read(op.inputs[1]),
                        self.made(out, OUTPUT if out in self.outs else DEFERRED))
        if kind == "conv2d_grad_w_update":
            return Step(WEIGHT_GRAD_UPDATE, op, self.read(op.inputs[2]))
        if kind == "update_weight":
            return Step(UPDATE_WEIGHT, op, self.read(op.inputs[1]))
        raise ValueError(f"a {kind} op cannot run channel by channel")


# ----------------------------------------------------------------------------------------------
# Row pipelines (``mbconv_rows``)


@dataclass(frozen=True)
class RowBuffer:
    """A ring (rows of a tensor, row r in slot r % rows) or a folded window (``rows`` rows of
    ``channels`` channels at a time) in the op's scratch: ``channels x rows x width`` int8 at ``offset``.
    ``live``: the schedule's events (inclusive spans) during which it holds bytes still to be read;
    buffers whose spans meet never share a byte, the others may (``row_schedule.place_buffers``).
    ``batch`` (a folded window): output rows its depthwise stage makes an event, from ``rows`` =
    k + (batch - 1) * stride rows of the window."""
    tensor: str
    channels: int
    rows: int
    width: int
    offset: int
    live: tuple[tuple[int, int], ...] = ()
    batch: int = 1

    @property
    def nbytes(self) -> int:
        return self.channels * self.rows * self.width


@dataclass(frozen=True, repr=False)
class RowsProgram:
    """The resolved program of a row pipeline: its static row schedule ((stage, row) events, stage
    ``row_schedule.STREAM``: fetch the next streamed row), its rings and folded windows at their
    scratch offsets, and the scratch bytes the planner reserves (the end of the last buffer)."""
    schedule: tuple[tuple[int, int], ...]
    rings: tuple[RowBuffer, ...]
    folds: tuple[RowBuffer, ...]
    total: int

    def __repr__(self) -> str:
        return f"RowsProgram({len(self.schedule)} events, {len(self.rings)} rings, {len(self.folds)} folds, " \
               f"scratch {self.total} B)"


def lower_rows(plan) -> RowsProgram:
    """The program of a row pipeline from its ``row_schedule.RowPlan`` (computed once by ``fuse_rows``)."""
    rings = tuple(RowBuffer(*entry) for entry in plan.rings)
    folds = tuple(RowBuffer(*entry) for entry in plan.folds)
    return RowsProgram(tuple(plan.schedule), rings, folds, max((b.offset + b.nbytes for b in rings + folds), default=0))

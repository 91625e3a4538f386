"""The verifier, run after every pass: a broken graph fails next to the pass that broke it.

Checks: every tensor an op reads is defined before it (a graph input, a constant/parameter, or an
earlier op's output: topological order); every tensor is defined once; every op kind is in the
catalogue and its outputs have the shapes and dtypes the catalogue's rule gives; roles and dtypes are
known; constants match their declared shape and dtype; only update ops may have no outputs.
Streamed inputs (``Graph.streams``) are graph inputs read only by row pipelines (``mbconv_rows`` with
``stream``, as their input 0); a row pipeline's stages are conv2d / add ops reading only its input,
earlier stages' outputs or its own operands, typed as the catalogue says.
"""

from __future__ import annotations

import numpy as np

from mcutrain.engine.fused_program import GradProgram, RowsProgram
from mcutrain.engine.ir import DTYPES, ROLES, Graph
from mcutrain.engine.ops import OUTPUT_TYPES, _WithInternal
from mcutrain.engine.row_schedule import buffer_needs, spans_meet


class VerifyError(ValueError):
    """The graph breaks an invariant; the message names the op and the tensor."""


def verify(graph: Graph) -> Graph:
    """Return ``graph`` unchanged if it is well formed, else raise VerifyError."""
    _check_tensors(graph)
    for name in graph.streams:
        if name not in graph.inputs:
            raise VerifyError(f"streamed tensor {name!r} is not a graph input")
    defined = set(graph.inputs) | set(graph.constants) | set(graph.params)
    for i, op in enumerate(graph.ops):
        where = f"op {i} {op.name!r} ({op.kind})"
        if op.kind not in OUTPUT_TYPES:
            raise VerifyError(f"{where}: unknown op kind")
        for name in op.inputs:
            if name not in graph.tensors:
                raise VerifyError(f"{where}: reads undeclared tensor {name!r}")
            if name not in defined:
                raise VerifyError(f"{where}: reads {name!r} before it is defined")
        _check_outputs(graph, op, where, defined)
        if op.kind == "mbconv_rows":
            _check_rows(graph, op, where)
        elif op.kind == "mbconv_grad":
            _check_grad(graph, op, where)
        elif graph.streams and set(op.inputs) & set(graph.streams):
            raise VerifyError(f"{where}: reads a streamed input whole (only row pipelines may read it)")
        defined.update(op.outputs)
    for name in graph.outputs:
        if name not in defined:
            raise VerifyError(f"graph output {name!r} is never defined")

    return graph


def _check_rows(graph: Graph, op, where: str) -> None:
    stages = op.attr("stages")
    internal = {t.name: t for t in op.attr("internal")}
    streamed = bool(op.attr("stream"))
    if streamed != (op.inputs[0] in graph.streams) or set(op.inputs[1:]) & set(graph.streams):
        raise VerifyError(f"{where}: a streamed input must be its input 0, flagged stream")
    _check_row_buffers(graph, op, internal, where)
    available = {op.inputs[0]} | set(op.inputs)
    for k, st in enumerate(stages):
        if st.kind not in ("conv2d", "add"):
            raise VerifyError(f"{where}: stage {st.name!r} is a {st.kind} (stages are conv2d / add)")
        missing = [n for n in st.inputs if n not in available]
        if missing:
            raise VerifyError(f"{where}: stage {st.name!r} reads {missing} (not its input nor an earlier stage)")
        last = k == len(stages) - 1
        if last and st.outputs != op.outputs:
            raise VerifyError(f"{where}: the last stage must write the op's outputs")
        if not last:
            if len(st.outputs) != 1 or st.outputs[0] not in internal:
                raise VerifyError(f"{where}: stage {st.name!r} must write one declared intermediate tensor")
            (shape, dtype), = OUTPUT_TYPES[st.kind](_WithInternal(graph, op), st)
            t = internal[st.outputs[0]]
            if t.shape != tuple(shape) or t.dtype != dtype or t.name in graph.tensors:
                raise VerifyError(f"{where}: intermediate {t.name!r} declared {t.type_str()}, the stage gives "
                                  f"{dtype}{list(shape)} (and it must not be a graph tensor)")
            available.add(st.outputs[0])


def _check_row_buffers(graph: Graph, op, internal: dict, where: str) -> None:
    """The program's rings and folded windows: aligned, inside its total, each live at every event that
    writes or reads it, and no two live at one event sharing a byte."""
    program = op.attr("program")
    if not isinstance(program, RowsProgram):
        raise VerifyError(f"{where}: no lowered program")
    buffers = program.rings + program.folds
    folded = {b.tensor: b.batch for b in program.folds}
    needs = buffer_needs(op.attr("stages"), op.inputs[0], program.schedule, folded, _WithInternal(graph, op))
    for b in buffers:
        if b.offset % 4 or b.offset < 0 or b.tensor not in set(internal) | {op.inputs[0]}:
            raise VerifyError(f"{where}: buffer of {b.tensor!r} at {b.offset} (aligned to 4, of the input or an "
                              f"intermediate tensor)")
        outside = [n for n in needs.get(b.tensor, ()) if not any(a <= n[0] and n[1] <= z for a, z in b.live)]
        if outside:
            raise VerifyError(f"{where}: buffer of {b.tensor!r} is needed in events {outside[0]}, outside its live "
                              f"spans")
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            if spans_meet(a.live, b.live) and a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes:
                raise VerifyError(f"{where}: buffer of {b.tensor!r} at {b.offset} shares bytes with {a.tensor!r}'s "
                                  f"while both are live")
    if max((b.offset + b.nbytes for b in buffers), default=0) != program.total:
        raise VerifyError(f"{where}: buffers end at {max(b.offset + b.nbytes for b in buffers)}, the program "
                          f"reserves {program.total}")


GRAD_PARTS = ("avgpool_grad", "requant_grad", "conv2d_grad_x", "conv2d_grad_b", "conv2d_grad_w",
              "conv2d_grad_w_update", "update_bias", "update_weight")


def _check_grad(graph: Graph, op, where: str) -> None:
    program = op.attr("program")
    if not isinstance(program, GradProgram):
        raise VerifyError(f"{where}: no lowered program")
    parts = program.all_ops
    bad = [p.name for p in parts if p.kind not in GRAD_PARTS]
    if bad:
        raise VerifyError(f"{where}: parts {bad} cannot run channel by channel")
    stray = set(op.attr("writes")) - set(graph.params)
    if stray or not set(op.attr("writes")) <= set(op.inputs):
        raise VerifyError(f"{where}: writes {sorted(stray) or op.attr('writes')}: not parameters it reads")
    recompute = program.recompute.convs if program.recompute is not None else ()
    made = {o for p in parts + recompute for o in p.outputs}
    for p in parts + recompute:
        missing = [n for n in p.inputs if n not in made and n not in op.inputs]
        if missing:
            raise VerifyError(f"{where}: part {p.name!r} reads {missing}, neither an input nor made by a part")
    _check_scratch(program, where)


def _check_scratch(program: GradProgram, where: str) -> None:
    """Slots one after another, inside the total; steps reading the scratch name a slot of it."""
    layout = program.scratch
    offset = channel_offset = 0
    for s in layout.slots:
        if s.offset != offset or s.channel_offset != channel_offset:
            raise VerifyError(f"{where}: scratch slot {s.tensor!r} at {s.offset}/{s.channel_offset}, "
                              f"expected {offset}/{channel_offset}")
        offset += layout.group * s.per_channel
        channel_offset += s.per_channel
    if layout.pass_stride < channel_offset or layout.pass_stride % 4:
        raise VerifyError(f"{where}: pass stride {layout.pass_stride} for {channel_offset} bytes a channel")
    offset = max(offset, layout.pass_bytes)
    if offset + layout.source_group * layout.source_row != layout.total:
        raise VerifyError(f"{where}: scratch slots and source rows take {offset} + "
                          f"{layout.source_group * layout.source_row} bytes, the layout says {layout.total}")
    slots = {s.tensor for s in layout.slots}
    for step in program.pre + program.steps + program.post:
        for operand in (step.grad, step.out, step.mask):
            if operand is not None and operand.place == "scratch" and operand.slot not in slots:
                raise VerifyError(f"{where}: step {step.op.name!r} puts {operand.name!r} in no scratch slot")


def _check_tensors(graph: Graph) -> None:
    for name, t in graph.tensors.items():
        if t.name != name:
            raise VerifyError(f"tensor {name!r} is declared under the name {t.name!r}")
        if t.role not in ROLES or t.dtype not in DTYPES:
            raise VerifyError(f"tensor {name!r}: unknown role {t.role!r} or dtype {t.dtype!r}")
    for name, array in graph.constants.items():
        t = graph.tensors.get(name)
        if t is None:
            raise VerifyError(f"constant {name!r} has no tensor declaration")
        if tuple(array.shape) != t.shape or np.dtype(array.dtype).name != t.dtype:
            raise VerifyError(f"constant {name!r} is {array.dtype}{list(array.shape)}, declared {t.type_str()}")


def _check_outputs(graph: Graph, op, where: str, defined: set) -> None:
    if not op.outputs and op.phase != "update":
        raise VerifyError(f"{where}: only update ops may have no outputs")
    expected = OUTPUT_TYPES[op.kind](graph, op)
    if len(expected) != len(op.outputs):
        raise VerifyError(f"{where}: {len(op.outputs)} outputs, the catalogue gives {len(expected)}")
    for name, (shape, dtype) in zip(op.outputs, expected):
        if name in defined:
            raise VerifyError(f"{where}: redefines {name!r} (single definition)")
        t = graph.tensors.get(name)
        if t is None:
            raise VerifyError(f"{where}: writes undeclared tensor {name!r}")
        if t.shape != tuple(shape) or t.dtype != dtype:
            raise VerifyError(f"{where}: output {name!r} declared {t.type_str()}, "
                              f"the op gives {dtype}[{','.join(map(str, shape))}]")

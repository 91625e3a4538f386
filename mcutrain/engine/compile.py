"""``compile_training``: int8 model + update plan -> a scheduled, memory-planned training program.

The pipeline, top to bottom (DESIGN.md section 6):
  trace (frontend) -> append the loss -> autodiff (joint graph) -> passes (``mcutrain.engine.passes``:
  insert_updates, prune, reorder, fuse_updates, fuse_expand, inplace, fuse_rows) -> lifetimes ->
  memory plan (greedy first fit, best of a few orders: ``placement``) -> report.
The inference program (predict, and the inference-only memory figure) is the traced forward through
the inference passes, scheduled and planned the same way, with the same row pipelines as the training
program (the same kernels: the training program's forward without masks and saved copies). For
honesty the report also gives the inference arena with the forward fused as far as it goes
(``inference_min_arena_bytes``). A ``Stage`` is one scheduled graph with its lifetimes and plan; a
``Program`` holds the training and inference stages, the options and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from mcutrain.engine.autodiff import differentiate
from mcutrain.engine.frontend import graph_from_qgraph, graph_from_qmodel
from mcutrain.engine.ir import Graph
from mcutrain.engine.lifetimes import buffers as arena_buffers
from mcutrain.engine.lifetimes import lifetimes, storage_roots
from mcutrain.engine.loss import append_loss
from mcutrain.engine.memory import ENGINE_STATE_BYTES, Buffer, Plan, lower_bound, plan_bump, plan_greedy, summary
from mcutrain.engine.passes import INFERENCE_PIPELINE, PIPELINE, Pass, PassOptions, run_passes
from mcutrain.engine.passes.fuse_backward import update_ops
from mcutrain.engine.passes.fuse_rows import KIND as ROWS
from mcutrain.engine.passes.fuse_rows import program_of as rows_program_of
from mcutrain.engine.passes.fuse_rows import rings_of, row_segments, scratch_size, stages_of
from mcutrain.engine.placement import plan_best
from mcutrain.quant.graph import QGraph
from mcutrain.quant.qmodel import QModel
from mcutrain.sparse import UpdatePlan

__all__ = ["Program", "Stage", "build_program", "compile_training", "format_report", "memory_report",
           "plan_stage", "trainable_bytes"]


@dataclass(frozen=True, eq=False)
class Stage:
    """A scheduled graph (its op order IS the schedule), its tensors' lifetimes and its memory plan."""

    graph: Graph
    lifetimes: Mapping[str, tuple[int, int]]
    storage: Mapping[str, str]  # arena tensor -> the buffer (storage root) it occupies
    buffers: tuple[Buffer, ...]
    plan: Plan

    @property
    def schedule(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.graph.ops)

    def offset(self, tensor: str) -> int:
        return self.plan.offsets[self.storage[tensor]]


@dataclass(frozen=True, eq=False)
class Program:
    """The compiled training program: training and inference stages, options, memory report."""

    train: Stage
    inference: Stage
    options: PassOptions
    report: Mapping[str, object]

    @property
    def graph(self) -> Graph:
        return self.train.graph

    @property
    def schedule(self) -> tuple[str, ...]:
        return self.train.schedule

    @property
    def lifetimes(self) -> Mapping[str, tuple[int, int]]:
        return self.train.lifetimes

    @property
    def plan(self) -> Plan:
        return self.train.plan


def plan_stage(graph: Graph, planner: Callable[..., Plan] = plan_best) -> Stage:
    """Lifetimes from the schedule (the graph's op order), buffers, and their placement."""
    bufs = arena_buffers(graph)
    return Stage(graph, lifetimes(graph), storage_roots(graph), bufs, planner(bufs))


def compile_training(qmodel: QModel | QGraph, plan: UpdatePlan, *, lr: float, seed: int,
                     passes: Sequence[Pass] = PIPELINE, stream_input: bool = True,
                     row_fusion: str = "auto", backward: str = "float32") -> Program:
    """Compile one SGD step at batch 1 (Int8Optimizer sgd, momentum 0, QAS, rule sr) for ``plan``.

    ``stream_input``: read the image row by row from its source (camera, DMA, host) instead of holding
    it whole in the arena (possible when only frozen layers read it); ``row_fusion``: how far the frozen
    forward prefix is run as row pipelines ("auto", "max", "off"; ``PassOptions``). ``passes`` exists
    for tests that compare the pipeline with and without a pass. ``qmodel`` may be an imported
    graph (``QGraph``): its frontend is ``graph_from_qgraph``, the rest is the same. ``backward``:
    "float32" or "int8" (the integer backward, ``PassOptions.backward``).
    """
    forward = graph_from_qgraph(qmodel, plan) if isinstance(qmodel, QGraph) else graph_from_qmodel(qmodel, plan)
    joint = differentiate(append_loss(forward), plan)
    options = PassOptions(lr=lr, seed=seed, stream_input=stream_input, row_fusion=row_fusion, backward=backward)
    return build_program(joint, forward, options, passes)


def build_program(joint: Graph, forward: Graph, options: PassOptions,
                  passes: Sequence[Pass] = PIPELINE) -> Program:
    """Joint (forward + loss + backward) graph and forward graph -> Program: passes, plans, report.

    The inference program uses the training program's row pipelines; a second inference plan with
    the forward fused as far as it goes ("max") is made for the report only."""
    train = plan_stage(run_passes(joint, options, passes))
    same = replace(options, row_segments=row_segments(train.graph))
    inference = plan_stage(run_passes(forward, same, INFERENCE_PIPELINE))
    fullest = replace(options, row_fusion="max", row_segments=None)
    best = plan_stage(run_passes(forward, fullest, INFERENCE_PIPELINE)).plan.arena_bytes
    return Program(train, inference, options, memory_report(train, inference, best))


# ----------------------------------------------------------------------------------------------
# The memory report


def memory_report(train: Stage, inference: Stage, inference_min: int | None = None) -> dict:
    """What lives where, in bytes (DESIGN.md section 6: count everything that lives in SRAM).

    arena: the planned arena (``placement.plan_best``: greedy first fit in the best of a few orders),
    with the bump planner's, plain greedy-by-size's and the lower bound for reference;
    trainable: the SRAM copies of trained parameters (kept channels of weights, whole int32 biases,
    the classifier); masks: the packed clamp masks (they are in the arena, listed for the paper's
    comparison); engine state: the step counter and the guard's few words (``memory.engine_state``);
    total SRAM = arena + trainable copies + engine state (no optimizer state: SGD without momentum);
    Flash: frozen weights, frozen parts of trained weights, constants, rescale tables and the residual adds'
    operand tables (``flash_constant_bytes``; the initial values of the trainable copies ship in Flash as well:
    ``flash_with_initial_trainables_bytes``);
    inference: the forward alone, planned the same way (``inference_peak_bytes`` is the same number:
    the key the CLI shows), with the training program's row pipelines; ``inference_min_arena_bytes``:
    the forward fused as far as it goes. Input: whether the image is streamed (then it is NOT in the
    arena: the ring of rows the first conv reads is), its whole size, and its bytes in the arena;
    ``notes`` says the same in words (``format_report`` prints everything).
    """
    graph = train.graph
    trainable = trainable_bytes(graph)
    constants = flash_constant_bytes(graph)
    stats = summary(train.plan)
    image = graph.tensor(graph.inputs[0])
    streamed = image.name in graph.streams
    pipelines = [op for op in graph.ops if op.kind == ROWS]
    ring = sum(c * rows * w for op in pipelines for t, (c, rows, w, _) in rings_of(op).items() if t == image.name)
    return {
        "arena_bytes": train.plan.arena_bytes,
        "arena_bump_bytes": plan_bump(train.buffers).arena_bytes,
        "arena_greedy_by_size_bytes": plan_greedy(train.buffers).arena_bytes,
        "arena_lower_bound_bytes": lower_bound(train.buffers),
        "peak_op": graph.ops[stats["peak_op"]].name if stats["peak_op"] is not None else None,
        "peak_bytes_by_kind": stats["peak_bytes_by_kind"],
        "trainable_bytes": trainable,
        "mask_bytes": sum(b.size for b in train.buffers if b.kind == "mask"),
        "total_sram_bytes": train.plan.arena_bytes + trainable + ENGINE_STATE_BYTES,
        "engine_state_bytes": ENGINE_STATE_BYTES,
        "flash_bytes": constants - trainable,
        "flash_with_initial_trainables_bytes": constants,
        "inference_arena_bytes": inference.plan.arena_bytes,
        "inference_peak_op": _peak_op_name(inference),
        "n_ops": len(graph.ops),
        "n_buffers": len(train.buffers),
        # added with the row pipelines (keys above keep their meaning)
        "trainable_sram_bytes": trainable,
        "inference_peak_bytes": inference.plan.arena_bytes,
        "inference_min_arena_bytes": inference_min if inference_min is not None else inference.plan.arena_bytes,
        "train_over_inference": train.plan.arena_bytes / max(inference.plan.arena_bytes, 1),
        "input_streamed": streamed,
        "input_bytes": image.nbytes,
        "input_in_arena_bytes": 0 if streamed else image.nbytes,
        "input_ring_bytes": ring,
        "row_pipelines": [list(op.attr("fused")) for op in pipelines],
        "row_pipeline_folds": sum(len(rows_program_of(op).folds) for op in pipelines),
        "row_pipeline_scratch_bytes": max((scratch_size(op) for op in pipelines), default=0),
        "block_backwards": sum(op.kind == "mbconv_grad" for op in graph.ops),
        "notes": _input_notes(streamed, image.nbytes, ring),
    }


def _input_notes(streamed: bool, whole: int, ring: int) -> list[str]:
    """Plain lines on where the image is, so that nobody reads the arena as holding it."""
    if streamed:
        return [f"image: streamed row by row from its source (camera / DMA / host buffer), NOT in the arena; "
                f"the arena holds a ring of {ring} bytes of its rows",
                f"image buffer if kept whole: {whole / 1024:.1f} KB (not counted in arena or total SRAM)"]
    return [f"image: whole in the arena ({whole / 1024:.1f} KB, counted in arena and total SRAM)"]


def format_report(report: Mapping[str, object]) -> str:
    """The memory report as text lines, saying plainly where the image is (streamed or not)."""
    kb = lambda b: f"{b / 1024:.1f} KB"  # noqa: E731
    r = report
    lines = [f"total SRAM: {kb(r['total_sram_bytes'])} = arena {kb(r['arena_bytes'])} "
             f"+ trainable parameter copies {kb(r['trainable_bytes'])} + engine state (step counter, guard) "
             f"{r.get('engine_state_bytes', 0)} bytes",
             f"  arena peak at {r['peak_op']} (masks {kb(r['mask_bytes'])} in the arena)"]
    if r["input_streamed"]:
        lines += [f"  image: STREAMED row by row from its source (camera / DMA / host buffer), not in the arena; "
                  f"its ring of rows in the arena: {kb(r['input_ring_bytes'])}",
                  f"  image buffer if kept whole: {kb(r['input_bytes'])} (not counted above)"]
    else:
        lines.append(f"  image: whole in the arena ({kb(r['input_bytes'])}, counted above)")
    lines.append(f"  row pipelines: {len(r['row_pipelines'])} (frozen prefix, ops {sum(map(len, r['row_pipelines']))}, "
                 f"folded expand convs {r['row_pipeline_folds']}); channel-by-channel block backwards: "
                 f"{r['block_backwards']}")
    lines += [f"inference peak (same kernels): {kb(r['inference_peak_bytes'])}; fused as far as it goes: "
              f"{kb(r['inference_min_arena_bytes'])}; training / inference {r['train_over_inference']:.2f}",
              f"Flash: {kb(r['flash_bytes'])}"]
    return "\n".join(lines)


ADD_TABLE_BYTES = 4 * (2 * 256 + 1)  # one residual add's mct_add_table (c/mct_kernels.h; codegen/add_tables.py)


def flash_constant_bytes(graph: Graph) -> int:
    """What the generated C keeps in Flash for ``graph`` beside its code: the constants (every parameter's initial
    value included), the float64 rescale tables of hidden fully connected layers (attributes, emitted as const
    arrays) and each residual add's operand tables (the generator's, one per add op however many stages run it).
    Not counted: a DSP build's row-pipeline plans (codegen/dsp_plans.py), which depend on the kernels chosen when
    the C is generated (docs/firmware.md's memory map gives their sizes)."""
    adds = {op.name for op in graph.ops if op.kind == "add"}
    adds |= {st.name for op in graph.ops if op.kind == ROWS for st in stages_of(op) if st.kind == "add"}
    rescale = sum(8 * len(op.attr("rescale")) for op in graph.ops if op.attr("rescale") is not None)
    return sum(a.nbytes for a in graph.constants.values()) + rescale + ADD_TABLE_BYTES * len(adds)


def trainable_bytes(graph: Graph) -> int:
    """Bytes of the SRAM copies: the kept slice (attribute ``kept_shape``) of every updated parameter."""
    total = 0
    for op in update_ops(graph):
        param = graph.tensor(op.inputs[0])
        total += int(np.prod(op.attr("kept_shape"))) * (param.nbytes // param.numel)
    return total


def _peak_op_name(stage: Stage) -> str | None:
    peak = summary(stage.plan)["peak_op"]
    return stage.graph.ops[peak].name if peak is not None else None

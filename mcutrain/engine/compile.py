"""``compile_training``: int8 model + update plan -> a scheduled, memory-planned training program.

The pipeline, top to bottom (DESIGN.md section 6):
  trace (frontend) -> append the loss -> autodiff (joint graph) -> passes (``mcutrain.engine.passes``:
  insert_updates, prune, reorder, fuse_updates, fuse_expand, inplace) -> lifetimes -> greedy memory
  plan -> report.
The inference program (predict, and the inference-only memory figure) is the traced forward through
the inference passes, scheduled and planned the same way. A ``Stage`` is one scheduled graph with its
lifetimes and plan; a ``Program`` holds the training and inference stages, the options and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from mcutrain.engine.autodiff import differentiate
from mcutrain.engine.frontend import graph_from_qmodel
from mcutrain.engine.ir import Graph
from mcutrain.engine.lifetimes import buffers as arena_buffers
from mcutrain.engine.lifetimes import lifetimes, storage_roots
from mcutrain.engine.loss import append_loss
from mcutrain.engine.memory import Buffer, Plan, lower_bound, plan_bump, plan_greedy, summary
from mcutrain.engine.passes import INFERENCE_PIPELINE, PIPELINE, Pass, PassOptions, run_passes
from mcutrain.quant.qmodel import QModel
from mcutrain.sparse import UpdatePlan

__all__ = ["Program", "Stage", "build_program", "compile_training", "memory_report", "plan_stage",
           "trainable_bytes"]


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


def plan_stage(graph: Graph, planner: Callable[..., Plan] = plan_greedy) -> Stage:
    """Lifetimes from the schedule (the graph's op order), buffers, and their placement."""
    bufs = arena_buffers(graph)
    return Stage(graph, lifetimes(graph), storage_roots(graph), bufs, planner(bufs))


def compile_training(qmodel: QModel, plan: UpdatePlan, *, lr: float, seed: int,
                     passes: Sequence[Pass] = PIPELINE) -> Program:
    """Compile one SGD step at batch 1 (Int8Optimizer sgd, momentum 0, QAS, rule sr) for ``plan``.

    ``passes`` exists for tests that compare the pipeline with and without a pass.
    """
    forward = graph_from_qmodel(qmodel, plan)
    joint = differentiate(append_loss(forward), plan)
    return build_program(joint, forward, PassOptions(lr=lr, seed=seed), passes)


def build_program(joint: Graph, forward: Graph, options: PassOptions,
                  passes: Sequence[Pass] = PIPELINE) -> Program:
    """Joint (forward + loss + backward) graph and forward graph -> Program: passes, plans, report."""
    train = plan_stage(run_passes(joint, options, passes))
    inference = plan_stage(run_passes(forward, options, INFERENCE_PIPELINE))
    return Program(train, inference, options, memory_report(train, inference))


# ----------------------------------------------------------------------------------------------
# The memory report


def memory_report(train: Stage, inference: Stage) -> dict:
    """What lives where, in bytes (DESIGN.md section 6: count everything that lives in SRAM).

    arena: the planned arena (greedy), with the bump planner's and the lower bound for reference;
    trainable: the SRAM copies of trained parameters (kept channels of weights, whole int32 biases,
    the classifier); masks: the packed clamp masks (they are in the arena, listed for the paper's
    comparison); total SRAM = arena + trainable copies (no optimizer state: SGD without momentum);
    Flash: frozen weights, frozen parts of trained weights, and constants (the initial values of the
    trainable copies ship in Flash as well: ``flash_with_initial_trainables_bytes``);
    inference: the forward alone, planned the same way.
    """
    graph = train.graph
    trainable = trainable_bytes(graph)
    constants = sum(a.nbytes for a in graph.constants.values())
    stats = summary(train.plan)
    return {
        "arena_bytes": train.plan.arena_bytes,
        "arena_bump_bytes": plan_bump(train.buffers).arena_bytes,
        "arena_lower_bound_bytes": lower_bound(train.buffers),
        "peak_op": graph.ops[stats["peak_op"]].name if stats["peak_op"] is not None else None,
        "peak_bytes_by_kind": stats["peak_bytes_by_kind"],
        "trainable_bytes": trainable,
        "mask_bytes": sum(b.size for b in train.buffers if b.kind == "mask"),
        "total_sram_bytes": train.plan.arena_bytes + trainable,
        "flash_bytes": constants - trainable,
        "flash_with_initial_trainables_bytes": constants,
        "inference_arena_bytes": inference.plan.arena_bytes,
        "inference_peak_op": _peak_op_name(inference),
        "n_ops": len(graph.ops),
        "n_buffers": len(train.buffers),
    }


def trainable_bytes(graph: Graph) -> int:
    """Bytes of the SRAM copies: the kept slice (attribute ``kept_shape``) of every updated parameter."""
    total = 0
    for op in graph.ops:
        if op.phase == "update":
            param = graph.tensor(op.inputs[0])
            total += int(np.prod(op.attr("kept_shape"))) * (param.nbytes // param.numel)
    return total


def _peak_op_name(stage: Stage) -> str | None:
    peak = summary(stage.plan)["peak_op"]
    return stage.graph.ops[peak].name if peak is not None else None

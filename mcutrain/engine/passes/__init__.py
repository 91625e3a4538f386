"""The compile pipeline: the passes, in order, in ONE place; the verifier runs after each.

Training (after ``differentiate``):
    insert_updates -> int8_backward -> prune -> reorder -> fuse_updates -> fuse_backward -> fuse_expand -> inplace
    -> fuse_rows
``int8_backward`` lowers the float backward to the integer one (``--backward int8``; identity in float32
mode), before anything fuses; ``fuse_backward`` (the channel-by-channel block backward, float only)
leaves an int8 graph alone.
Inference (the forward alone, for predict and the inference-only memory figure):
    prune -> fuse_expand -> inplace -> fuse_rows
``fuse_backward`` runs before ``fuse_expand`` because it may drop the masks of a block's expand and
depthwise convs (recomputed in the backward), which lets ``fuse_expand`` fuse that block's forward too;
``fuse_rows`` comes last because it chooses how far to fuse from the live memory of the final
schedule (the rest of the program sets the floor it needs to reach).
Every pass is a pure function ``(Graph, PassOptions) -> Graph`` in its own module, which says why it
exists; ``run_passes`` verifies the input and the output of every pass, so a broken graph fails next
to the pass that broke it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from mcutrain.engine.ir import Graph
from mcutrain.engine.passes.fuse_backward import fuse_backward
from mcutrain.engine.passes.fuse_expand import fuse_expand
from mcutrain.engine.passes.fuse_rows import fuse_rows
from mcutrain.engine.passes.fuse_updates import fuse_updates
from mcutrain.engine.passes.inplace import inplace
from mcutrain.engine.passes.insert_updates import insert_updates
from mcutrain.engine.passes.int8_backward import int8_backward
from mcutrain.engine.passes.options import PassOptions
from mcutrain.engine.passes.prune import prune
from mcutrain.engine.passes.reorder import reorder
from mcutrain.engine.verify import verify

Pass = Callable[[Graph, PassOptions], Graph]

PIPELINE: tuple[Pass, ...] = (insert_updates, int8_backward, prune, reorder, fuse_updates, fuse_backward, fuse_expand,
                              inplace, fuse_rows)
INFERENCE_PIPELINE: tuple[Pass, ...] = (prune, fuse_expand, inplace, fuse_rows)

__all__ = ["INFERENCE_PIPELINE", "PIPELINE", "PassOptions", "fuse_backward", "fuse_expand", "fuse_rows", "fuse_updates",
           "inplace", "int8_backward",
           "insert_updates", "prune", "reorder", "run_passes"]


def run_passes(graph: Graph, options: PassOptions, passes: Sequence[Pass] = PIPELINE) -> Graph:
    """Apply ``passes`` in order, verifying the graph before the first and after every one."""
    graph = verify(graph)
    for p in passes:
        graph = verify(p(graph, options))
    return graph

"""Memory planning for the compiled training program (DESIGN.md section 6).

Works on plain records, not on the IR: whoever schedules the program describes each arena tensor as a
``Buffer(name, size, first, last, kind)`` with an inclusive lifetime in op indices.

``records``  Buffer and Plan, validation, alignment, live bytes per op;
``planners`` plan_greedy (TFLite Micro's greedy-by-size first fit), plan_bump (no reuse, the
             baseline) and lower_bound (the most bytes ever live at once);
``check``    check_plan, an independent O(n^2) overlap/alignment/arena checker (the tests' oracle);
``report``   timeline_text (ASCII arena timeline), plot_live_memory (PNG), summary (dict);
``engine_state`` ENGINE_STATE_BYTES: the generated C's step counter and guard, counted in total SRAM.
"""

from mcutrain.engine.memory.check import PlanError, check_plan
from mcutrain.engine.memory.engine_state import ENGINE_STATE_BYTES
from mcutrain.engine.memory.planners import lower_bound, plan_bump, plan_greedy
from mcutrain.engine.memory.records import (
    DEFAULT_ALIGNMENT,
    Buffer,
    Plan,
    align_up,
    live_bytes_per_op,
)
from mcutrain.engine.memory.report import plot_live_memory, summary, timeline_text

__all__ = [
    "DEFAULT_ALIGNMENT", "ENGINE_STATE_BYTES", "Buffer", "Plan", "PlanError", "align_up", "check_plan",
    "live_bytes_per_op", "lower_bound", "plan_bump", "plan_greedy", "plot_live_memory", "summary",
    "timeline_text",
]

"""Files that show a compiled program: the printed graph, the memory timeline (text and PNG), JSON."""

from __future__ import annotations

import json
from pathlib import Path

from mcutrain.engine.compile import Program, Stage
from mcutrain.engine.ir import format_graph
from mcutrain.engine.memory import plot_live_memory, timeline_text
from mcutrain.io.atomic import atomic_write_text


def phase_starts(stage: Stage) -> dict[int, str]:
    """{op index: phase} where forward / backward / update begin (update ops interleave with backward)."""
    starts, last = {}, None
    for i, op in enumerate(stage.graph.ops):
        if op.phase != last:
            starts[i] = last = op.phase
    return starts


def write_reports(program: Program, folder: str | Path, summary: dict, title: str) -> list[Path]:
    """graph.txt, timeline.txt, memory.png (training), inference_timeline.txt and report.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train, inference = program.train, program.inference
    names = [op.name for op in train.graph.ops]
    files = {
        "graph.txt": format_graph(train.graph),
        "timeline.txt": timeline_text(train.plan, names, phase_starts(train)),
        "inference_timeline.txt": timeline_text(inference.plan, [op.name for op in inference.graph.ops]),
        "report.json": json.dumps({**summary, "report": dict(program.report)}, indent=2, default=str),
    }
    written = []
    for name, text in files.items():
        atomic_write_text(folder / name, text + "\n")
        written.append(folder / name)
    written.append(plot_live_memory(train.plan, folder / "memory.png", len(names), phase_starts(train), title))
    return written

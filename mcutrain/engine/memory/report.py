"""Human-readable views of a memory plan: an ASCII timeline, a PNG of live memory, a summary dict.

The timeline follows TFLite Micro's planner debug print: one row per op, the arena drawn as a bar in
which each live buffer shows as its own character, so reuse (the same bytes taken by different
buffers at different ops) and fragmentation ('.' gaps under the peak) can be seen at a glance.
KB means 1024 bytes everywhere, as in the rest of mcutrain.
"""

from pathlib import Path

from mcutrain.engine.memory.planners import lower_bound, plan_bump
from mcutrain.engine.memory.records import Plan, live_bytes_per_op

__all__ = ["live_bytes_per_op", "plot_live_memory", "summary", "timeline_text"]

KB = 1024
# Characters for buffers in the bar; '.' (free), ' ' and '|' (bar edges) are kept out.
CHARS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
         "#$%&*+=?@^~<>/\\!")
PHASE_COLORS = {"forward": "tab:blue", "backward": "tab:orange", "update": "tab:green"}


def fmt_bytes(n: float) -> str:
    """Bytes below 1 KB as bytes, the rest as KB with one decimal (what the paper's tables use)."""
    return f"{n:.0f} B" if n < KB else f"{n / KB:.1f} KB"


def buffer_chars(buffers) -> dict[str, str]:
    """One bar character per buffer: unique while there are enough characters, else shared.

    Past len(CHARS) buffers, a character is reused only between buffers never live together
    (greedy interval colouring in schedule order needs as many characters as buffers live at
    once), so a row of the bar stays unambiguous; the legend's op ranges tell the owners apart.
    """
    ordered = sorted(buffers, key=lambda b: (b.first, b.last, b.name))
    if len(ordered) <= len(CHARS):
        return {b.name: c for b, c in zip(ordered, CHARS)}
    chars: dict[str, str] = {}
    for i, b in enumerate(ordered):
        taken = {chars[d.name] for d in ordered[:i] if d.lives_with(b)}
        free = [c for c in CHARS if c not in taken]
        chars[b.name] = free[0] if free else CHARS[i % len(CHARS)]
    return chars


def phase_names(phases: dict[int, str] | None, n_ops: int) -> list[str]:
    """The phase of every op: the value at the nearest key at or before it ('' before the first).

    So ``{0: "forward", 12: "backward"}`` (phase starts) and a full per-op map both work.
    """
    phases = phases or {}
    for op in phases:
        if not isinstance(op, int) or not 0 <= op < max(n_ops, 1):
            raise ValueError(f"phase key {op!r} is not an op index in 0..{n_ops - 1}")
    names, current = [], ""
    for op in range(n_ops):
        current = phases.get(op, current)
        names.append(current)
    return names


def _resolve_n_ops(plan: Plan, n_ops: int | None) -> int:
    """The schedule length to draw: given, else the plan's span; never shorter than the span."""
    span = plan.n_ops
    if n_ops is None:
        return span
    if not isinstance(n_ops, int) or n_ops < span:
        raise ValueError(f"n_ops={n_ops!r} but the plan has buffers live up to op {span - 1}")
    return n_ops


def _bar(plan: Plan, op: int, chars: dict[str, str], width: int) -> str:
    """The arena at op ``op`` as ``width`` cells; small buffers are painted last so they stay visible."""
    cells = ["."] * width
    arena = plan.arena_bytes
    live = [b for b in plan.buffers if b.size and b.live_at(op)] if arena else []
    for b in sorted(live, key=lambda b: (-b.size, b.name)):
        start, end = plan.region(b.name)
        lo = min(_cell(start, width, arena), width - 1)
        hi = max(lo + 1, _cell(end, width, arena))
        cells[lo:hi] = chars[b.name] * (hi - lo)
    return "".join(cells)


def _cell(byte: int, width: int, arena: int) -> int:
    """The cell boundary nearest to ``byte``: neighbours in the arena then split a shared cell
    where their bytes split, instead of the later one taking the whole cell."""
    return (2 * byte * width + arena) // (2 * arena)


def _legend(plan: Plan, chars: dict[str, str]) -> list[str]:
    """One line per buffer: its character, name, kind, size, offset and lifetime."""
    nw = max((len(b.name) for b in plan.buffers), default=4)
    kw = max((len(b.kind) for b in plan.buffers), default=4)
    lines = ["legend:"]
    for b in plan.buffers:
        lines.append(f"  {chars[b.name]}  {b.name:<{nw}}  {b.kind:<{kw}}  {fmt_bytes(b.size):>9}"
                     f"  offset {plan.offsets[b.name]:>7}  ops {b.first}..{b.last}")
    return lines


def timeline_text(plan: Plan, op_names: list[str] | None = None,
                  phases: dict[int, str] | None = None, width: int = 60) -> str:
    """ASCII timeline: a header, one row per op (index, name, phase, live memory, arena bar), legend.

    The phase is printed on the first op of each phase only, so phase boundaries stand out; the op
    with the most live bytes is marked 'peak'. Live memory is in bytes for tiny plans, else in KB.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    n_ops = _resolve_n_ops(plan, None if op_names is None else len(op_names))
    live = live_bytes_per_op(plan.buffers, n_ops)
    in_kb = max(live, default=0) >= 10 * KB
    phase = phase_names(phases, n_ops) if phases else None
    name_w = max(4, min(max((len(n) for n in op_names or []), default=0), 28))
    phase_w = max([5] + [len(p) for p in phase or []])
    chars = buffer_chars(plan.buffers)
    peak = live.index(max(live)) if any(live) else None
    head = f"{'op':>4}  " + (f"{'name':<{name_w}}  " if op_names else "")
    head += f"{'phase':<{phase_w}}  " if phase else ""
    lines = [_header(plan, n_ops, width), "",
             head + f"{'live KB' if in_kb else 'live B':>9}  |{'arena'[:width]:^{width}}|"]
    for op in range(n_ops):
        row = f"{op:>4}  "
        if op_names:
            row += f"{_clip(op_names[op], name_w):<{name_w}}  "
        if phase:
            row += f"{phase[op] if op == 0 or phase[op] != phase[op - 1] else '':<{phase_w}}  "
        row += f"{live[op] / KB:>9.1f}" if in_kb else f"{live[op]:>9d}"
        lines.append(row + f"  |{_bar(plan, op, chars, width)}|" + ("  peak" if op == peak else ""))
    return "\n".join(lines + [""] + _legend(plan, chars)) + "\n"


def _clip(text: str, width: int) -> str:
    """Shorten an op name to the column, marking the cut with '~' (keeps the bars aligned)."""
    return text if len(text) <= width else text[:width - 1] + "~"


def _header(plan: Plan, n_ops: int, width: int) -> str:
    """Two lines: what the plan costs against its bounds, and the scale of the bar."""
    bump = plan_bump(plan.buffers, plan.alignment).arena_bytes
    cell = fmt_bytes(plan.arena_bytes / width) if plan.arena_bytes else "0 B"
    return (f"memory plan: {len(plan.buffers)} buffers over {n_ops} ops; "
            f"arena {fmt_bytes(plan.arena_bytes)} (lower bound {fmt_bytes(lower_bound(plan.buffers))},"
            f" no reuse {fmt_bytes(bump)}); alignment {plan.alignment} B\n"
            f"bar: arena offset 0 on the left, 1 char = {cell}, '.' = free")


def _kinds(buffers) -> list[str]:
    """Buffer kinds in order of first appearance in the schedule (stable colours and legends)."""
    seen: list[str] = []
    for b in sorted(buffers, key=lambda b: (b.first, b.last, b.name)):
        if b.kind not in seen:
            seen.append(b.kind)
    return seen


def summary(plan: Plan) -> dict:
    """The plan's numbers for logs and benchmarks: arena vs its bounds, and what fills the peak."""
    live = live_bytes_per_op(plan.buffers)
    peak = live.index(max(live)) if live else None
    by_kind: dict[str, int] = {}
    for b in plan.buffers:
        if peak is not None and b.live_at(peak):
            by_kind[b.kind] = by_kind.get(b.kind, 0) + b.size
    return {
        "arena_bytes": plan.arena_bytes,
        "lower_bound_bytes": lower_bound(plan.buffers),
        "bump_arena_bytes": plan_bump(plan.buffers, plan.alignment).arena_bytes,
        "n_buffers": len(plan.buffers),
        "n_ops": len(live),
        "alignment": plan.alignment,
        "peak_op": peak,
        "peak_live_bytes": live[peak] if live else 0,
        "peak_bytes_by_kind": by_kind,
    }


def _phase_spans(phases: dict[int, str] | None, n_ops: int) -> list[tuple[int, int, str]]:
    """Maximal runs ``(start, end_exclusive, name)`` of ops in the same (non-empty) phase."""
    names = phase_names(phases, n_ops)
    spans: list[tuple[int, int, str]] = []
    for op, name in enumerate(names):
        if spans and spans[-1][2] == name and spans[-1][1] == op:
            spans[-1] = (spans[-1][0], op + 1, name)
        elif name:
            spans.append((op, op + 1, name))
    return spans


def plot_live_memory(plan: Plan, path, n_ops: int | None = None,
                     phases: dict[int, str] | None = None, title: str = "") -> Path:
    """Write a PNG of live memory (KB) per op, stacked by buffer kind, with the arena size as a line
    and the phases shaded. Uses the Agg canvas directly, so no global pyplot/backend state is touched.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_ops = _resolve_n_ops(plan, n_ops)
    x = np.repeat(np.arange(n_ops + 1) - 0.5, 2)[1:-1]  # op t is the flat step [t-0.5, t+0.5]
    kinds = _kinds(plan.buffers)
    ys = [np.repeat(live_bytes_per_op([b for b in plan.buffers if b.kind == k], n_ops), 2) / KB
          for k in kinds]
    fig = Figure(figsize=(10, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if kinds and n_ops:
        ax.stackplot(x, *ys, labels=kinds, alpha=0.85)
    ax.axhline(plan.arena_bytes / KB, color="black", linestyle="--",
               label=f"arena {plan.arena_bytes / KB:.1f} KB")
    labelled: set[str] = set()
    for start, end, name in _phase_spans(phases, n_ops):
        # Update ops interleave with the backward pass (each right after its gradient): every span is
        # shaded and each phase is named once, in the legend, so nothing overlaps.
        ax.axvspan(start - 0.5, end - 0.5, color=PHASE_COLORS.get(name, "grey"),
                   alpha=0.3 if name == "update" else 0.08, lw=0,
                   label=None if name in labelled else f"{name} ops")
        labelled.add(name)
    ax.set_xlim(-0.5, max(n_ops, 1) - 0.5)
    ax.set_ylim(0, max(plan.arena_bytes / KB, 1e-3) * 1.08)
    ax.set_xlabel("op index (schedule order)")
    ax.set_ylabel("live memory (KB)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    from mcutrain.io.figure import save_figure  # written whole (a killed run leaves no half plot)

    save_figure(fig, path, dpi=110)
    return Path(path)

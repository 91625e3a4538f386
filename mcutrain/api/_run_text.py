"""The text ``mcutrain run`` prints for a run's result (private to ``mcutrain.api.running``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mcutrain.api.running import guard_rollbacks


def backward_text(r: dict[str, Any]) -> str:
    """How a folder's backward computes: the integer backward, or the float one's accumulators."""
    if r.get("backward") == "int8":
        return "int8 integer backward"
    return f"{r['accumulate']} backward accumulators"


def run_text(r: dict[str, Any]) -> str:
    losses = r["losses"]
    lines = [f"{r['model']} @ {r['resolution']}, {r['scheme']} on {r['target']} ({backward_text(r)}, "
             f"{r.get('kernels', 'portable')} forward kernels): {len(losses)} steps on {r['data']} "
             f"in {r['seconds']:.2f} s"]
    if losses:
        k = max(1, len(losses) // 5)
        lines.append(f"  loss            first {k}: {np.mean(losses[:k]):.4f}, last {k}: {np.mean(losses[-k:]):.4f}")
    a = r["accuracy"]
    if a["n"]:
        lines.append(f"  accuracy        {a['before']:.3f} -> {a['after']:.3f} on {a['n']} held-out samples")
    if guard_rollbacks(r):
        g = r["guard"]
        lr = f", learning rate now {g['lr_final']:g}" if isinstance(g.get("lr_final"), (int, float)) else ""
        lines.append(f"  guard           rolled back to good parameters {guard_rollbacks(r)} time(s){lr}")
    if "health" in r:
        lines.append(f"  health          {'FAILED: ' if r['failed'] else ''}{r['health']['reason']}")
    if r["target"] != "host":
        s = r["sram"]
        lines += [f"  SRAM            {r['sram_bytes']:,} bytes (static {s['static']:,} + stack high-water "
                  f"{s['stack_high_water']:,}); fits 256 KB: {'yes' if r['fits_256kb'] else 'no'}",
                  f"  Flash           {r['flash_bytes']:,} bytes",
                  f"  instructions    {r['instructions_per_step'] or 0:,} per step, "
                  f"{r['instructions_per_inference'] or 0:,} per inference (QEMU instruction counts, not cycles)"]
    if r.get("profile"):
        lines += _profile_lines(r["profile"])
    return "\n".join(lines)


def _profile_lines(profile: dict[str, Any], top: int = 10) -> list[str]:
    lines = []
    for stage, p in profile.items():
        total = p["default_build_instructions"] or p["instructions"]

        def share(n: int) -> str:
            return f"{100 * n / total:.1f}%" if total else "-"

        lines += ["", f"  {stage}: {p['instructions']:,} instructions in {len(p['ops'])} ops (default build's "
                      f"whole {stage}: {total:,}; {p['note']})",
                  "    by phase: " + ", ".join(f"{k} {v:,} ({share(v)})" for k, v in p["by_phase"].items()),
                  "    by kind:  " + ", ".join(f"{k} {v:,} ({share(v)})" for k, v in p["by_kind"].items()),
                  f"    top {min(top, len(p['ops']))} ops:"]
        for r in sorted(p["ops"], key=lambda r: -r["instructions"])[:top]:
            lines.append(f"    {r['instructions']:>13,} {share(r['instructions']):>6}  {r['phase']:<8} {r['kind']:<22} "
                         f"{r['op']}")
    return lines


"""Timing and memory of one contestant's process (no mcutrain imports: the ONNX Runtime worker runs it
in its own environment too)."""

from __future__ import annotations

import time
from typing import Callable


def timed_steps(step: Callable[[int], float], warmup: int, steps: int) -> tuple[float, list[float]]:
    """``warmup`` untimed calls, then ``steps`` timed ones: (mean seconds per step, their losses)."""
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    losses = [step(warmup + i) for i in range(steps)]
    return (time.perf_counter() - t0) / steps, losses


def peak_rss_bytes() -> int:
    """VmHWM of this process: its peak resident set since exec (ru_maxrss would carry the parent's)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")

"""Shared plumbing for benchmarks: where results go and how every result is stamped."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

from mcutrain.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "results"


def stamp(command: str) -> dict:
    """Who/what/when of a measurement, written beside every figure."""
    return {
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # The machines are shared: the 1-minute load average when the measurement started.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def write_results(name: str, payload: dict, markdown: str) -> None:
    """The JSON beside the page; every page carries its stamp (command, date, machine, load) even when
    its own text does not say it."""
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    if payload.get("date") and payload["date"] not in markdown:
        markdown = markdown.rstrip() + (f"\n\n_Measured {payload['date']} with `{payload.get('command', '?')}` on "
                                        f"{payload.get('machine', '?')} (1-minute load {payload.get('load_average_1min')})._")
    atomic_write_text(DOCS / f"{name}.md", markdown.rstrip() + "\n")


def throughput_args(description: str, argv, *, steps: int, windows: int):
    """Parse the options every throughput benchmark takes, and apply the thread count."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=steps, help="training steps per timed window")
    ap.add_argument("--windows", type=int, default=windows, help="timed windows (the median is reported)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine two OpenMP threads per process "
                         "stall on barriers whenever anything else runs, which makes figures meaningless)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args

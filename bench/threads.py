"""`make bench-threads`: the CLI's default thread setting against others, alone and beside a busy process.

Issue 12 measured a finetune step at 5.5-7.7 s instead of 0.06 s while a second process was busy
on the 2 cores: torch's OpenMP threads spin at every barrier while the thread they wait for has no
core. The CLI now lets idle threads sleep and picks the thread count (``mcutrain/cli/threads.py``).

Each contestant is one fresh ``mcutrain finetune`` process (the bundled backbone quantized to int8,
a new 10-class head for mnist-5k, a subset of its images at 64x64, a sparse scheme whose frozen
prefix is cached: the fast path of the issue), timed from start to exit:

* default: what ``mcutrain`` picks by itself;
* ``--threads 2``;
* ``--threads 1``;
* torch's defaults, as before the change: one thread per core, spinning waiters (``GOMP_SPINCOUNT``
  at libgomp's own default, which the CLI respects as a user's choice).

Each runs with and without a competitor: a Python busy loop in its own process, started before the
contestant and stopped after it. Contestants alternate within each repetition so that changes in
the machine's load hit all alike; the median of the repetitions is reported, as a ratio to the
default in the same condition. A run that passes ``--limit`` seconds is stopped and reported as
"> limit". The user's OMP_* settings are removed for the contestants (they would decide instead of
the rule). Not a test: the figures depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, stamp, write_results
from mcutrain.cli import threads

BACKBONE = ROOT / "mcutrain" / "assets" / "mbv2-w0.35-fmnist64.safetensors"
BUSY_LOOP = "while True:\n    pass\n"
SPINNING = {"GOMP_SPINCOUNT": "300000"}  # libgomp's default spin count when OMP_WAIT_POLICY is unset


def contestants(cores: int) -> list[tuple[str, list[str], dict]]:
    """(label, extra CLI arguments, extra environment)."""
    return [("default", [], {}),
            ("--threads 2", ["--threads", "2"], {}),
            ("--threads 1", ["--threads", "1"], {}),
            (f"torch's defaults ({cores} threads, spinning)", ["--threads", str(cores)], SPINNING)]


def make_model(folder: Path) -> Path:
    """The bundled backbone quantized to int8 (calibration only, no evaluation: seconds)."""
    from mcutrain.data import load_dataset
    from mcutrain.quant.model_file import save_qmodel
    from mcutrain.quant.quantize import quantize_model
    from mcutrain.train.checkpoint import load_checkpoint

    out = folder / "int8.safetensors"
    if not out.is_file():
        model, info = load_checkpoint(BACKBONE)
        seed = info.training.get("config", {}).get("seed", 0)
        calib = load_dataset("fashion-mnist", seed=seed).train
        save_qmodel(out, quantize_model(model, info, calib, seed=seed, calibration_data="fashion-mnist"))
    return out


def clean_environment() -> dict:
    drop = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", *threads.WAIT_VARIABLES}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}


def run_once(command: list[str], env: dict, limit: float, competitor: bool) -> dict:
    """Seconds from start to exit of one finetune process (None when stopped at ``limit``), and
    the training loop's own seconds from its JSON."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if competitor else None
    try:
        t0 = time.perf_counter()
        try:
            out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "train_seconds": None}
        wall = time.perf_counter() - t0
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if out.returncode != 0:
        raise SystemExit(f"finetune failed ({out.returncode}): {' '.join(command)}\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    return {"seconds": round(wall, 2), "train_seconds": result["seconds"], "accuracy": result["accuracy"]}


def median(values: list) -> float | None:
    """Median of the runs; a stopped run (None) counts as longer than any finished one, and a
    median that involves one is None too."""
    middle = statistics.median(float("inf") if v is None else v for v in values)
    return None if middle == float("inf") else round(middle, 2)


def measure(args, model: Path, folder: Path) -> list[dict]:
    cores = len(threads.allowed_cpus())
    base = [sys.executable, "-m", "mcutrain", "finetune", str(model), "--data", "mnist-5k", "--scheme", args.scheme,
            "--resolution", "64", "--train-subset", str(args.train_subset), "--eval-subset", "200",
            "--epochs", str(args.epochs), "--lr", "0.01", "--seed", "0", "--json", "--quiet",
            "--out", str(folder / "out.safetensors")]
    env = clean_environment()
    runs = {(label, busy): [] for label, _, _ in contestants(cores) for busy in (False, True)}
    for rep in range(args.reps):
        for busy in (False, True):
            for label, extra, extra_env in contestants(cores):
                runs[label, busy].append(run_once(base + extra, {**env, **extra_env}, args.limit, busy))
                r = runs[label, busy][-1]
                print(f"rep {rep + 1}/{args.reps} {'busy' if busy else 'idle'} {label:36s} "
                      f"{r['seconds'] if r['seconds'] is not None else f'> {args.limit:.0f}'} s", flush=True)
    rows = []
    for (label, busy), rs in runs.items():
        rows.append({"contestant": label, "competitor": busy, "seconds": median([r["seconds"] for r in rs]),
                     "train_seconds": median([r["train_seconds"] for r in rs]),
                     "runs_seconds": [r["seconds"] for r in rs],
                     "accuracy": sorted({r["accuracy"] for r in rs if "accuracy" in r})})
    return rows


def ratio(row: dict, default: dict) -> str:
    if row["seconds"] is None:
        return "stopped"
    return f"{row['seconds'] / default['seconds']:.2f}"


def markdown(rows: list[dict], meta: dict, args) -> str:
    def cell(v):
        return f"> {args.limit:.0f}" if v is None else f"{v:.1f}"

    default = {busy: next(r for r in rows if r["contestant"] == "default" and r["competitor"] == busy)
               for busy in (False, True)}
    labels = list(dict.fromkeys(r["contestant"] for r in rows))
    by = {(r["contestant"], r["competitor"]): r for r in rows}
    lines = [
        "# Threads: the CLI's default against fixed thread counts, alone and beside a busy process", "",
        f"Command: `{meta['command']}`. Measured {meta['date']} on {meta['machine']} (1-minute load "
        f"{meta['load_average_1min']} at the start: the machine is shared), torch {meta['torch']}.", "",
        f"Each cell: seconds from start to exit of a fresh `mcutrain finetune` process (median of {args.reps}; "
        f"in round brackets the training loop alone, in square brackets every run), and the ratio to the "
        f"default in the same column. The run: "
        f"the bundled backbone quantized to int8, a new head for mnist-5k, {args.train_subset} training "
        f"images at 64x64, {args.epochs} epoch(s), batch 32, scheme `{args.scheme}` (frozen prefix cached). "
        f"Competitor: a Python busy loop in a second process; \"no competitor\" means none started by the "
        f"bench (other work on the machine went on). The default here is "
        f"{threads.default_threads()} threads with sleeping waiters (`mcutrain/cli/threads.py`). Order within "
        f"a repetition: the rows from top to bottom, first without, then with the competitor.", "",
        "| contestant | no competitor: s (train s) | ratio | a busy competitor: s (train s) | ratio |",
        "|---|---:|---:|---:|---:|"]
    for label in labels:
        cells = []
        for busy in (False, True):
            r = by[label, busy]
            train = "" if r["seconds"] is None else f" ({cell(r['train_seconds'])})"
            each = ", ".join(cell(v) for v in r["runs_seconds"])
            cells += [f"{cell(r['seconds'])}{train} [{each}]", ratio(r, default[busy])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    accuracies = sorted({a for r in rows for a in r["accuracy"]})
    lines += ["", f"Test accuracy of every finished run: {', '.join(f'{a * 100:.2f}%' for a in accuracies)} "
              "(the thread count and the wait policy change the time, not the result).", "",
              "Reading: spinning waiters are what made the issue's runs 100x slower: beside a busy process "
              "each barrier waits for a thread that has no core while its partner burns the time slice. "
              "Sleeping waiters remove that collapse at the default thread count."]
    if threads.default_threads() == 2:
        lines += ["", "Here the default is itself 2 threads with sleeping waiters: the rows `default` and "
                  "`--threads 2` are the same setting, so the difference between them is the noise of this "
                  "shared machine, the yardstick for every other difference in the table."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scheme", default="paper-99kb")
    ap.add_argument("--train-subset", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--limit", type=float, default=60.0, help="seconds after which a run is stopped")
    args = ap.parse_args(argv)
    folder = ROOT / "runs" / "bench-threads"
    folder.mkdir(parents=True, exist_ok=True)
    model = make_model(folder)
    command = (f"make bench-threads  (python -m bench.threads --scheme {args.scheme} --train-subset "
               f"{args.train_subset} --epochs {args.epochs} --reps {args.reps} --limit {args.limit:g})")
    meta = stamp(command)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, model, Path(tmp))
    payload = {**meta, "default_threads": threads.default_threads(), "rows": rows}
    page = markdown(rows, meta, args)
    write_results("threads", payload, page)
    print(page)


if __name__ == "__main__":
    main()

"""`mcutrain run`: train a compiled program on real samples, on the host or on the Cortex-M7 under QEMU.

The folder comes from ``mcutrain compile --target host|cortex-m7 --out DIR``. The samples are drawn
from the dataset's train split (training) and test split (held-out accuracy before and after), and
turned into the model's int8 input the way training in simulation does (``mcutrain.codegen.samples``).
For the Cortex-M7 the result adds what the firmware costs: SRAM (.data + .bss + the stack's measured
high-water mark), Flash (.isr_vector + .text + .rodata + .ARM.exidx + .data), and instructions per
step and per inference counted by QEMU (-icount): instructions, not cycles. The result names the
backward's accumulator mode the folder was generated with (``accumulate``, from ``target.json``).
``--profile`` (folders compiled with ``--profile``) adds the instructions of every op of the first
training step and the first held-out inference (``codegen.runner.profile_cortex_m7``).

Every run is judged by ``train.health`` from its per-step losses and its held-out accuracy after
training (``health`` in the result, ``failed`` with it): a run that did not learn (the loss ended
non-finite, rose far above its start or stayed at chance level log K, or the held-out accuracy is at
chance) prints why and exits with status 3. Nothing is written either way. When the generated C
guards itself (``guard`` in the runner's result: rollbacks to good parameters with a halved rate),
the rollbacks are printed; a run that rolled back and ended healthy has not failed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcutrain.cli.commands import HELP
from mcutrain.cli.output import add_json_flag, emit
from mcutrain.errors import DataError, TrainingFailed
from mcutrain.train.health import judge


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help=HELP["run"],
        description="Run --steps SGD steps (batch 1) of the program compiled into DIR on samples of --data, "
                    "and measure accuracy on --eval held-out samples before and after. Host folders run the "
                    "host library; cortex-m7 folders run the firmware under qemu-system-arm (mps2-an500, "
                    "semihosting), which also reports SRAM, Flash and instructions per step and per inference.")
    p.add_argument("folder", metavar="DIR", help="folder made by `mcutrain compile --target ... --out DIR`")
    p.add_argument("--data", required=True, help="dataset name (see `mcutrain data`), folder:PATH or npz:PATH")
    p.add_argument("--steps", type=int, required=True, help="training steps (one sample each)")
    p.add_argument("--eval", type=int, default=20, help="held-out samples for the accuracy before/after (0: none)")
    p.add_argument("--seed", type=int, default=0, help="dataset split and sample order")
    p.add_argument("--profile", action="store_true",
                   help="cortex-m7 folders compiled with --profile: also time every op of the first training step "
                        "and the first held-out inference (firmware-profile.elf) and report instructions per op, "
                        "by kind and by phase")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a QEMU run may take before it is killed")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mcutrain.codegen.samples import int8_samples
    from mcutrain.codegen.targets import read_target
    from mcutrain.data import load_dataset

    if args.steps < 0 or args.eval < 0:
        raise DataError(f"--steps and --eval must be >= 0, got {args.steps} and {args.eval}")
    target = read_target(args.folder)
    if args.profile and target["target"] != "cortex-m7":
        raise DataError(f"--profile times the firmware's ops; {args.folder} is a {target['target']} folder "
                        f"(compile with --target cortex-m7 --profile)")
    dataset = load_dataset(args.data, seed=args.seed)
    if dataset.num_classes != target["num_classes"]:
        raise DataError(f"{args.folder} holds a {target['num_classes']}-class model, {args.data} has "
                        f"{dataset.num_classes} classes")
    draw = dict(resolution=target["resolution"], preprocessing=target["preprocessing"],
                input_scale=target["input"]["scale"], input_zero=target["input"]["zero"])
    train = int8_samples(dataset.train, args.steps, seed=args.seed, **draw)
    held_out = int8_samples(dataset.test, min(args.eval, len(dataset.test)), seed=args.seed + 1, **draw)
    from mcutrain.codegen.runner import profile_cortex_m7, run_cortex_m7, run_host

    runner = run_host if target["target"] == "host" else run_cortex_m7
    result = {"folder": str(args.folder), "target": target["target"], "model": target["model"],
              "resolution": target["resolution"], "scheme": target["scheme"], "accumulate": target["accumulate"],
              "data": args.data,
              **runner(Path(args.folder), target, train, held_out)}
    if args.profile:
        result["profile"] = profile_cortex_m7(Path(args.folder), target, train, held_out, result)
    health = run_health(result, target["num_classes"])
    result.update(failed=not health.ok, health=health.to_dict())
    emit(args, result, _human)
    if not health.ok:
        lr = target.get("lr")
        advice = (f"{health.lr_advice(lr)} in `mcutrain compile` and recompile" if isinstance(lr, (int, float))
                  else "recompile with another --lr")
        raise TrainingFailed(f"training on the C engine failed to learn: {health.reason}{_rollbacks_note(result)}; "
                             f"{advice}")
    return 0


def run_health(result: dict, classes: int):
    """The health of a run of the engine: its per-step losses and held-out accuracy after training
    (none when --eval 0). Rollbacks of the engine's guard are no failure in themselves: the judgement
    looks at where the run ends."""
    accuracy = result["accuracy"]
    after = accuracy.get("after") if accuracy.get("n") else None
    return judge(result["losses"], classes, val_accuracy=after, val_n=accuracy.get("n") or None, unit="step")


def guard_rollbacks(result: dict) -> int:
    """How often the engine's guard rolled back (0 when the program has no guard)."""
    guard = result.get("guard") or {}
    return int(guard.get("rollbacks") or 0)


def _rollbacks_note(result: dict) -> str:
    n = guard_rollbacks(result)
    return f" (its guard rolled back {n} time(s) and could not recover)" if n else ""


def _human(r: dict) -> str:
    losses = r["losses"]
    lines = [f"{r['model']} @ {r['resolution']}, {r['scheme']} on {r['target']} ({r['accumulate']} backward "
             f"accumulators): {len(losses)} steps on {r['data']} in {r['seconds']:.2f} s"]
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
    if r["target"] == "cortex-m7":
        s = r["sram"]
        lines += [f"  SRAM            {r['sram_bytes']:,} bytes (static {s['static']:,} + stack high-water "
                  f"{s['stack_high_water']:,}); fits 256 KB: {'yes' if r['fits_256kb'] else 'no'}",
                  f"  Flash           {r['flash_bytes']:,} bytes",
                  f"  instructions    {r['instructions_per_step'] or 0:,} per step, "
                  f"{r['instructions_per_inference'] or 0:,} per inference (QEMU instruction counts, not cycles)"]
    if r.get("profile"):
        lines += _profile_lines(r["profile"])
    return "\n".join(lines)


def _profile_lines(profile: dict, top: int = 10) -> list[str]:
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


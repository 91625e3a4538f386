"""Where a Cortex-M7 training step's instructions go: the three paper networks, op by op.

m7_footprint measured 608-766 M instructions per training step for the paper networks at 128x128 with
`paper-99kb` when float64 accumulators were the default, 6.5-7.5x the paper's cycles. This benchmark
says which ops that goes to. Each network
(random int8 weights: instruction counts do not depend on the weights' values, only a little on the
sample through the loss and the stochastic rounding) is compiled for C and built twice by
``build_target(..., profile=True)``: the default ``firmware.elf`` and ``firmware-profile.elf``
(-DMCT_TRACE: the harness reads the CMSDK timer after every op). Both run under QEMU mps2-an500
(`-icount shift=0`, 40 instructions per timer tick) on the same digits sample resized to 128x128: one
prediction, then one training step from the initial parameters; the profile's loss must equal the
default build's bit for bit.

Per op: (ticks at its end - ticks at the previous op's end) x 40 - the hook's own cost, measured in
the same run (``hook_cost``: a probe of 4096 hook sites with the hook set and cleared). Resolution: 40
instructions per op; the sum over a step is exact to a tick plus the hook sites' NULL test the probe
does not see (reported as ``unattributed``: the default build's step minus the ops' sum).

Groups (from the program's schedule: each op's kind and phase):
- forward, row pipelines: ``mbconv_rows`` ops (the fused frozen blocks streaming the image row by row)
- forward, frozen prefix: the other forward ops up to and including the first whose output the backward
  reads (the input of the earliest trained layer)
- forward, trained part: the forward ops after it
- loss: ``softmax_ce``; backward: the other backward-phase ops; updates: update-phase ops (bias updates
  and the fused weight-gradient + update kernels)
Both backward accumulator modes are profiled: float32 (the default, on the M7's single-precision FPU)
and float64 (the audit mode ``--accumulate float64``, bit-equal to the NumPy reference, soft-float on
the M7); the per-kind, top-op and inference sections are the default mode's.
The forward runs the cortex-m7 target's default kernels (dsp: the Cortex-M DSP extension's,
``codegen/c/mct_dsp.h``), or ``--kernels portable`` (the plain C); each row records which.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from bench.common import DOCS, stamp, write_results
from bench.paper import PAPER_MS_PER_STEP, codegen_program, digits_samples, paper_cycles_per_step
from mcutrain.codegen.firmware import op_profile, run_qemu
from mcutrain.codegen.targets import build_target
from mcutrain.models.specs import PAPER_SPECS

GROUPS = ("forward, row pipelines", "forward, frozen prefix", "forward, trained part", "loss", "backward", "updates")
MODES = ("float64", "float32")  # both, side by side (the audit mode first, as the plot shows them)
DEFAULT_MODE = "float32"  # the default build's accumulators (mcutrain.codegen.generate.DEFAULT_ACCUMULATE)
TOP = 8


def groups_of(program) -> list[str]:
    """The group (``GROUPS``) of each training op, in schedule order."""
    ops = program.train.graph.ops
    read_by_backward = {n for op in ops if op.phase != "forward" for n in op.inputs}
    first_saved = next((i for i, op in enumerate(ops) if op.phase == "forward"
                        and any(o in read_by_backward for o in op.outputs)), len(ops))
    groups = []
    for i, op in enumerate(ops):
        if op.kind == "softmax_ce":
            groups.append("loss")
        elif op.phase == "update":
            groups.append("updates")
        elif op.phase == "backward":
            groups.append("backward")
        elif op.kind == "mbconv_rows":
            groups.append("forward, row pipelines")
        else:
            groups.append("forward, frozen prefix" if i <= first_saved else "forward, trained part")
    return groups


def sums(rows: list[dict], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + r["instructions"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile_mode(program, qmodel, plan, folder: Path, samples, accumulate: str, kernels: str | None = None) -> dict:
    log = lambda m: print("  " + m, flush=True)  # noqa: E731
    target = build_target(program, qmodel, plan, "cortex-m7", folder, accumulate=accumulate, kernels=kernels,
                          profile=True, log=log)
    default = run_qemu(folder / target["elf"], *samples, classes=10, after=False)
    profiled = run_qemu(folder / target["profile"]["elf"], *samples, classes=10, after=False)
    if profiled.losses.tobytes() != default.losses.tobytes():
        raise RuntimeError(f"{qmodel.spec.name} {accumulate}: the profile build's loss {profiled.losses} differs "
                           f"from the default build's {default.losses}")
    ops = target["profile"]["ops"]
    train = op_profile(profiled, ops["train"], stage="train")
    infer = op_profile(profiled, ops["inference"], stage="inference")
    for row, group in zip(train["ops"], groups_of(program)):
        row["group"] = group
    step, inference = int(default.train_instructions[0]), int(default.predict_instructions[0])
    attributed = sum(r["instructions"] for r in train["ops"])
    return {
        "accumulate": accumulate, "kernels": target["kernels"], "loss": float(default.losses[0]),
        "step_instructions": step, "inference_instructions": inference,
        "attributed_instructions": attributed, "unattributed": step - attributed,
        "inference_unattributed": inference - sum(r["instructions"] for r in infer["ops"]),
        "hook_instructions_per_op": train["hook_instructions_per_op"],
        "by_group": {g: sum(r["instructions"] for r in train["ops"] if r["group"] == g) for g in GROUPS},
        "by_kind": sums(train["ops"], "kind"), "by_phase": sums(train["ops"], "phase"),
        "inference_by_kind": sums(infer["ops"], "kind"),
        "train_ops": train["ops"], "inference_ops": infer["ops"],
    }


def measure(name: str, resolution: int, folder: Path, kernels: str | None = None) -> dict:
    program, qmodel, plan = codegen_program(name, resolution)
    samples = digits_samples(qmodel, 1, 1)
    modes = {m: profile_mode(program, qmodel, plan, folder / m, samples, m, kernels) for m in MODES}
    return {"model": name, "resolution": resolution, "scheme": plan.scheme,
            "train_ops": len(program.train.graph.ops), "inference_ops": len(program.inference.graph.ops),
            "paper_ms_per_step": PAPER_MS_PER_STEP[name],
            "paper_cycles_per_step": paper_cycles_per_step(name), "modes": modes}


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels, x = [], 0.0
    colors = dict(zip(GROUPS, ("#8fb3d9", "#3b6ea5", "#1b3f66", "#e0a040", "#c0504d", "#7a9a3a")))
    for r in rows:
        for mode in MODES:
            bottom = 0.0
            for g in GROUPS:
                v = r["modes"][mode]["by_group"][g] / 1e6
                ax.bar(x, v, 0.7, bottom=bottom, color=colors[g], label=g if x == 0 else None)
                bottom += v
            labels.append((x, f"{r['model']}\n{mode}"))
            x += 1
        ax.plot([x - 2.35, x - 0.65], [r["paper_cycles_per_step"] / 1e6] * 2, color="black", lw=2,
                label="paper: cycles / step (STM32F746, 216 MHz)" if x == 2 else None)
        x += 0.6
    ax.set_xticks([p for p, _ in labels], [t for _, t in labels], fontsize=7)
    ax.set_ylabel("instructions per training step (M)")
    ax.set_title("Cortex-M7 (QEMU -icount) instructions per training step by op group, 128x128, paper-99kb",
                 fontsize=9)
    top = max(r["modes"][m]["step_instructions"] for r in rows for m in MODES) / 1e6
    ax.set_ylim(0, top * 1.35)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def pct(n: float, total: float) -> str:
    return f"{100 * n / total:.0f}%"


def markdown(rows: list[dict], meta: dict) -> str:
    md = ["# Where a Cortex-M7 training step goes: per-op instruction profile of the paper networks", "",
          f"Measured {meta['date']}. Command: `{meta['command']}`. Each network (128x128, `paper-99kb`, random "
          "int8 weights) is built as the default firmware and as the profile firmware (`mcutrain compile --target "
          "cortex-m7 --profile`: the harness reads the timer after every op); both run under QEMU mps2-an500 "
          "(`-icount shift=0`) on the same digits sample: one prediction, one training step. The profile's loss "
          "equals the default build's bit for bit. **Instructions, not cycles.** Per op: timer ticks x 40 "
          "between consecutive ops (resolution 40 instructions) minus the hook's cost measured in the same run "
          f"({rows[0]['modes'][DEFAULT_MODE]['hook_instructions_per_op']} instructions); 'unattributed' is the "
          "default build's step minus the ops' sum: negative, because what each hook site costs beyond the "
          "probed hook (the NULL test, the arguments, registers the compiler keeps around the call) stays in "
          f"the ops' counts: {site_range(rows)} instructions per op, under 0.001% of a step.", "",
          "Groups: 'row pipelines' = the `mbconv_rows` ops (fused frozen blocks, image streamed row by row); "
          "'frozen prefix' = the other forward ops up to the one that makes the earliest trained layer's input; "
          "'trained part' = the forward after it; 'backward' = backward-phase ops other than the loss: mostly "
          "`mbconv_grad`, the channel-by-channel backward of a whole inverted-residual block, which also "
          "computes the block's weight gradients and applies their updates (the op names run from "
          "`...pointwise2.conv2d_grad_x` to `...pointwise1.weight.update`), so weight-gradient and update work "
          "is inside 'backward'; 'updates' = the separate update-phase ops (bias updates, the classifier).", "",
          "## Training step by group (M instructions, share of the step)", "",
          "| model | accumulators | step (default build) | " + " | ".join(GROUPS) + " | unattributed | "
          "paper cycles / step |", "|---|---|---:|" + "---:|" * len(GROUPS) + "---:|---:|"]
    for r in rows:
        for mode in MODES:
            m = r["modes"][mode]
            cells = [f"{m['by_group'][g] / 1e6:.1f} ({pct(m['by_group'][g], m['step_instructions'])})" for g in GROUPS]
            md.append(f"| {r['model']} | {mode} | {m['step_instructions'] / 1e6:.1f} M | " + " | ".join(cells)
                      + f" | {m['unattributed']:,} | {r['paper_cycles_per_step'] / 1e6:.1f} M |")
    md += ["", f"## By op kind ({DEFAULT_MODE} accumulators, the default; M instructions per step)", ""]
    for r in rows:
        m = r["modes"][DEFAULT_MODE]
        kinds = ", ".join(f"{k} {v / 1e6:.1f} ({pct(v, m['step_instructions'])})" for k, v in m["by_kind"].items()
                          if v >= 0.005 * m["step_instructions"])
        md.append(f"- **{r['model']}** ({r['train_ops']} ops): {kinds}")
    md += ["", f"## Top {TOP} ops per network ({DEFAULT_MODE} accumulators, the default)", ""]
    for r in rows:
        m = r["modes"][DEFAULT_MODE]
        md += [f"**{r['model']}**", "", "| op | kind | group | M instructions | share |", "|---|---|---|---:|---:|"]
        for op in sorted(m["train_ops"], key=lambda o: -o["instructions"])[:TOP]:
            md.append(f"| `{op['op']}` | {op['kind']} | {op['group']} | {op['instructions'] / 1e6:.1f} | "
                      f"{pct(op['instructions'], m['step_instructions'])} |")
        md.append("")
    md += [f"## Inference (one prediction, M instructions by kind, {DEFAULT_MODE} build)", ""]
    for r in rows:
        m = r["modes"][DEFAULT_MODE]
        md.append(f"- **{r['model']}**: {m['inference_instructions'] / 1e6:.1f} M: " + ", ".join(
            f"{k} {v / 1e6:.1f}" for k, v in m["inference_by_kind"].items()))
    md += ["", "![instructions per step by group](m7_profile.png)", "", "## What this says", "", findings(rows)]
    return "\n".join(md)


def site_range(rows: list[dict]) -> str:
    per_op = [-m["unattributed"] / r["train_ops"] for r in rows for m in r["modes"].values()]
    return f"{min(per_op):.0f}-{max(per_op):.0f}"


MCUNET_FORWARD_MACS = 22.45e6  # DESIGN.md section 6: MCUNet-5FPS forward at 128x128


def findings(rows: list[dict]) -> str:
    """The page's reading of the numbers, computed from them (the text names the measured shares)."""
    lines = []
    for r in rows:
        d, f = r["modes"]["float64"], r["modes"]["float32"]
        fwd = sum(d["by_group"][g] for g in GROUPS[:3])
        bwd = d["by_group"]["backward"] + d["by_group"]["updates"] + d["by_group"]["loss"]
        lines.append(f"- {r['model']}: forward {fwd / 1e6:.0f} M ({pct(fwd, d['step_instructions'])}: row "
                     f"pipelines {d['by_group'][GROUPS[0]] / 1e6:.0f} M), backward + updates + loss {bwd / 1e6:.0f} M "
                     f"({pct(bwd, d['step_instructions'])}); float32 accumulators take the backward + updates "
                     f"from {(d['by_group']['backward'] + d['by_group']['updates']) / 1e6:.0f} M to "
                     f"{(f['by_group']['backward'] + f['by_group']['updates']) / 1e6:.0f} M; the whole float32 "
                     f"step is {f['step_instructions'] / r['paper_cycles_per_step']:.1f}x the paper's cycles, its "
                     f"forward alone {sum(f['by_group'][g] for g in GROUPS[:3]) / r['paper_cycles_per_step']:.1f}x.")
    d = {r["model"]: r["modes"]["float64"] for r in rows}
    mcunet_fwd = sum(d["mcunet-5fps"]["by_group"][g] for g in GROUPS[:3]) if "mcunet-5fps" in d else None
    f = {r["model"]: r["modes"]["float32"] for r in rows}
    back32 = [f[m]["by_group"]["backward"] / r["paper_cycles_per_step"] for m, r in zip(f, rows)]
    cut = [d[m]["by_group"]["backward"] / f[m]["by_group"]["backward"] for m in d]
    whole32 = [f[m]["step_instructions"] / r["paper_cycles_per_step"] for m, r in zip(f, rows)]
    whole64 = [d[m]["step_instructions"] / r["paper_cycles_per_step"] for m, r in zip(d, rows)]
    rows_share = [d[m]["by_group"][GROUPS[0]] / sum(d[m]["by_group"][g] for g in GROUPS[:3]) for m in d]
    small = max((f[m]["by_group"]["loss"] + f[m]["by_group"]["updates"]) / f[m]["step_instructions"] for m in f)
    fwd32 = [sum(f[m]["by_group"][g] for g in GROUPS[:3]) / r["paper_cycles_per_step"] for m, r in zip(f, rows)]
    lines += ["", "Reading: in the float64 (audit) build the block backwards (`mbconv_grad`, weight gradients and "
              "updates included) are "
              f"{min(pct(d[m]['by_group']['backward'], d[m]['step_instructions']) for m in d)}-"
              f"{max(pct(d[m]['by_group']['backward'], d[m]['step_instructions']) for m in d)} of a step, most of "
              "it the soft-float double of the accumulators: float32 accumulators (the default since 2026-12) cut "
              f"the backward {min(cut):.1f}-{max(cut):.1f}x, which brings the step from "
              f"{min(whole64):.1f}-{max(whole64):.1f}x to {min(whole32):.1f}-{max(whole32):.1f}x the paper's cycles. "
              f"Of that float32 step, the backward is {min(back32):.1f}-{max(back32):.1f}x the paper's whole step "
              "(float32 loops over two expanded channels per pass) and the forward "
              f"{min(fwd32):.1f}-{max(fwd32):.1f}x"
              + (f" (MCUNet-5FPS: {mcunet_fwd / 1e6:.0f} M instructions for {MCUNET_FORWARD_MACS / 1e6:.2f} M "
                 f"MACs = {mcunet_fwd / MCUNET_FORWARD_MACS:.1f} instructions per MAC; TinyEngine runs int8 "
                 "inference at about 2.5 cycles per MAC)" if mcunet_fwd else "")
              + f", {100 * min(rows_share):.0f}-{100 * max(rows_share):.0f}% of it in the row pipelines of the "
              "frozen prefix, which every inference runs too (DSP-extension kernels on NCHW rows). The loss and the "
              f"separate updates are negligible (under {100 * small:.1f}% of a float32 step). Caveat: these are QEMU "
              "instruction counts, not cycles; an M7 dual-issues some instructions and stalls on Flash, so the "
              "multiples against the paper's cycles are indicative, not a cycle-accurate comparison."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--kernels", choices=("dsp", "portable"), default=None,
                    help="the forward's kernels (default: the cortex-m7 target's, dsp)")
    args = ap.parse_args(argv)
    kernels = f" --kernels {args.kernels}" if args.kernels else ""
    meta = stamp(f"make bench  (python -m bench.m7_profile --resolution {args.resolution}{kernels})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="m7-profile-") as tmp:
        for spec in PAPER_SPECS:
            print(f"{spec.name}:", flush=True)
            rows.append(measure(spec.name, args.resolution, Path(tmp) / spec.name, args.kernels))
            for mode, m in rows[-1]["modes"].items():
                print(f"  {mode}: {m['step_instructions'] / 1e6:.1f} M / step: " + ", ".join(
                    f"{g} {v / 1e6:.1f}" for g, v in m["by_group"].items()), flush=True)
    plot(rows, DOCS / "m7_profile.png")
    write_results("m7_profile", {"benchmark": "m7_profile", "groups": list(GROUPS), "rows": rows, **meta},
                  markdown(rows, meta))


if __name__ == "__main__":
    main()

"""The demo's report folder: ``summary.json`` (every number), ``summary.md`` (the same for people), and
``training.png`` (loss and held-out accuracy over the on-device steps); the stages that own them have
already written ``search.png`` (evolution vs random search) and ``memory/`` (the compiled program's
memory timeline, text and PNG, from ``mcutrain.engine.reports``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mcutrain.io.atomic import atomic_write_text

__all__ = ["human_summary", "write_demo_report"]


def write_demo_report(result: dict, folder) -> list[Path]:
    folder = Path(folder)
    atomic_write_text(folder / "summary.json", json.dumps(result, indent=1, default=_plain) + "\n")
    atomic_write_text(folder / "summary.md", markdown(result) + "\n")
    plot_training(result, folder / "training.png")
    return [folder / "summary.json", folder / "summary.md", folder / "training.png", folder / "search.png",
            *map(Path, result["compiled"]["report_files"])]


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def plot_training(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(result["losses"], np.float64)
    window = max(1, min(100, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(window, len(losses) + 1), smooth, color="tab:blue", label=f"loss (mean of {window} steps)")
    ax.set_xlabel("training step on the C engine (batch 1)")
    ax.set_ylabel("cross-entropy loss", color="tab:blue")
    curve = result["host"].get("accuracy_curve", [])
    ax2 = ax.twinx()
    ax2.plot([s for s, _ in curve], [100 * a for _, a in curve], "o-", color="tab:green",
             label=f"held-out accuracy ({result['host']['accuracy']['n']} samples)")
    ax2.set_ylabel("held-out accuracy (%)", color="tab:green")
    ax2.set_ylim(0, 100)
    ax.set_title(f"{result['task']['name']}: on-device training of {result['backbone']['model']} "
                 f"@{result['backbone']['resolution']} (host build of the generated C)", fontsize=9)
    lines = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="center left", fontsize=8)
    fig.tight_layout()
    from mcutrain.io.figure import save_figure  # written whole (a killed run leaves no half plot)

    save_figure(fig, path, dpi=120)
    plt.close(fig)


def _kb(n) -> str:
    return f"{n / 1024:.1f} KB"


def _contrib_text(c: dict) -> str:
    """Which analysis the search used; for the bundled one, whether the int8 model is the very one it measured."""
    if c["source"] == "fast":
        return f"fast estimate ({c['seconds']:.0f} s)" + (f"; warning: {c['warning']}" if "warning" in c else "")
    if c["source"] != "bundled":
        return c["source"]
    same = c.get("same_int8_model")
    return ("bundled (same checkpoint, quantizer settings and task" +
            ("; the int8 model is bit-identical to the analysed one)" if same else
             "; the int8 model differs from the analysed one in its last bits)" if same is False else ")"))


def _dropped_text(s: dict) -> str:
    """The weights the batch-1 check took out of the searched scheme (``demo_graph._steady_scheme``)."""
    dropped = s.get("dropped_weights")
    return f"; weights of conv {', '.join(map(str, dropped))} dropped (they ran away at batch 1)" if dropped else ""


def human_summary(r: dict) -> list[tuple[str, str]]:
    """(label, text) rows: the terminal summary and the Markdown table say the same."""
    b, s, c, h, d = r["backbone"], r["search"], r["compiled"], r["host"], r.get("device", {})
    rows = [
        ("backbone", _backbone_text(b)),
        ("contribution", _contrib_text(r["contrib"])),
        ("scheme", f"searched ({s['evaluations']} candidates): biases of {s['bias_layers']} convs, weights of "
                   f"{len(s['weight_layers'])} convs, classifier; predicted gain {100 * s['predicted_gain']:+.1f} "
                   f"points (random search {100 * s['random_predicted_gain']:+.1f})" + _dropped_text(s)),
        ("memory (computed)", f"SRAM {_kb(c['total_sram_bytes'])} (arena {_kb(c['arena_bytes'])} + trained "
                              f"parameters {_kb(c['trainable_bytes'])} + engine state) of a {_kb(s['search_sram_budget_bytes'])} "
                              f"budget; Flash constants {_kb(c['flash_bytes'])}"),
        ("new task", f"{r['task']['name']}: {100 * h['accuracy']['before']:.1f}% before -> "
                     f"{100 * h['accuracy']['after']:.1f}% after {h['steps']} on-device steps "
                     f"({h['accuracy']['n']} held-out samples)"),
        ("host C engine", f"{h['ms_per_step']:.2f} ms per training step (incl. Python driving it)"),
    ]
    core = d.get("core", "cortex-m7")  # a summary from before --core
    if "skipped" in d:
        rows.append((core, d["skipped"]))
    elif d:
        rows += [
            (f"{core} (QEMU)", f"{d['steps']} steps, losses bit-identical to the host: "
                                 f"{'yes' if d['losses_equal_host'] else 'NO'}"),
            ("memory (measured)", f"SRAM {_kb(d['sram_bytes'])} (static {_kb(d['sram']['static'])} + stack "
                                  f"high-water {d['sram']['stack_high_water']} B), Flash {_kb(d['flash_bytes'])}; "
                                  f"fits 256 KB: {'yes' if d['fits_256kb'] else 'no'}"),
            ("instructions", f"{d['instructions_per_step']:,} per training step, {d['instructions_per_inference']:,} "
                             f"per inference (QEMU counts, not cycles)"),
        ]
    if "export" in r:  # an imported .tflite (mcutrain.demo_graph): the trained model back in TFLite
        e = r["export"]
        check = (f"LiteRT reference kernels on {e['litert_samples']} held-out samples: outputs bit-identical to "
                 f"mcutrain's on {e['litert_equal_samples']}, accuracy {100 * e['litert_accuracy']:.1f}%"
                 if e.get("litert") == "checked" else e.get("litert", ""))
        rows.append(("export", f"{e['tflite']} ({e['step']} steps of trained parameters); {check}"))
    rows.append(("time", f"{r['seconds']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                            r["stage_seconds"].items()) + ")"))
    return rows


def _backbone_text(b: dict) -> str:
    if b.get("imported"):
        return (f"{b['model']} (imported full-int8 TFLite) @ {b['resolution']}x{b['channels']}: {b['convs']} convs, "
                f"new zero head")
    return (f"{b['model']} @ {b['resolution']}x{b['resolution']} on {b['data']}: float "
            f"{100 * b['float_accuracy']:.2f}% -> int8 {100 * b['int8_accuracy']:.2f}% ({b['test_n']:,} test images)")


def markdown(r: dict) -> str:
    lines = ["# mcutrain demo report", "",
             f"Command: `{r.get('command', 'mcutrain demo')}`", "",
             "| | |", "|---|---|"]
    lines += [f"| {label} | {text} |" for label, text in human_summary(r)]
    lines += ["", "![training](training.png)", "", "![search](search.png)", "",
              "![memory](memory/memory.png)", "",
              "Files: `summary.json` (every number), `scheme.json` (the searched scheme, usable with "
              "`mcutrain compile --scheme`), `model-int8.safetensors`, `host/` and the core's folder, e.g. "
              "`cortex-m7/` (the generated C and its builds), `memory/` (graph, timelines, plot)."]
    return "\n".join(lines)

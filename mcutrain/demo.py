"""The main job, end to end: a pretrained float backbone -> training ON the compiled C engine.

    result = run_demo(DemoConfig())          # what `mcutrain demo` / `make demo` run
    write_demo_report(result, cfg.out)       # mcutrain.reports.demo: JSON, Markdown, plots

The stages, in pipeline order (each a function below, each printed as it starts):
  1. backbone   load the float checkpoint, its accuracy on its own task;
  2. quantize   int8 (post-training, calibrated), its accuracy on its own task;
  3. new task   a new zero int8 head for a task the backbone never saw;
  4. contrib    the contribution analysis: the bundled one when it was made for this model and task,
                else the fast gradient estimate (``search.fast``). "This model" is recognised by its recipe
                (``io.identity.quantization_recipe``: the float checkpoint's tensor identity and the
                quantizer's version and calibration settings), which a fresh machine reproduces
                whatever its CPU or the checkpoint's header; the int8 model's content identity is
                compared too and reported (equal wherever quantization is CPU-independent);
  5. search     evolutionary search for the scheme with the best predicted gain whose TOTAL SRAM
                (arena + trained parameter copies, ``mcutrain compile``'s figure) fits the SRAM budget
                less a stack reserve, and whose Flash constants fit the Flash budget less a code reserve;
  6. compile    the training program for C (the same program ``mcutrain compile`` reports), generated
                and built for the host;
  7. train      batch-1 SGD steps ON the host build of the generated C, streaming the new task's
                samples one at a time, held-out accuracy measured along the way;
  8. device     the same program as firmware for --core (Cortex-M7 by default) under QEMU (when the
                toolchain is installed):
                a few steps on the same samples, which must give the host's losses bit for bit, and
                what it costs: SRAM (static + measured stack), Flash, instructions per step.
Defaults (the bundled backbone, mnist-5k, 256 KB / 1 MB) finish in a few minutes on 2 cores.

``DemoConfig(model=PATH.tflite)`` (``mcutrain demo --model``) runs the same job on a full-int8 TFLite
model instead of a float backbone: ``mcutrain.demo_graph`` (import with a new head, analysis, search,
compile, train on the C engine, the firmware, export back to .tflite checked with LiteRT).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mcutrain.assets import DEFAULT_BACKBONE, DEFAULT_BACKBONE_DATA, DEFAULT_CONTRIB
from mcutrain.codegen.cores import STACK_RESERVE
from mcutrain.errors import McutrainError

__all__ = ["DemoConfig", "choose_analysis", "run_demo", "STACK_RESERVE_BYTES", "CODE_RESERVE_BYTES"]

# What the searched program may not use of the chip: the C stack (the firmware build's reserve,
# mcutrain.codegen.cores.STACK_RESERVE: 6 KB, the measured high-water mark under 4 KB) and, in Flash, the
# code (about 40 KB of kernels, board and harness; 64 KB kept).
STACK_RESERVE_BYTES = STACK_RESERVE
CODE_RESERVE_BYTES = 64 * 1024
ANALYSES = ("auto", "fast", "quick")
"""What ``--contrib`` takes besides a contrib.json path (``choose_analysis`` says what each means)."""


@dataclass(frozen=True)
class DemoConfig:
    checkpoint: str = str(DEFAULT_BACKBONE)
    model: str | None = None  # a full-int8 .tflite: the imported-graph job (mcutrain.demo_graph) instead
    data: str | None = None  # the backbone's own task (default: recorded in the checkpoint)
    own_eval_samples: int = 0  # test images of the backbone's own task (0: the whole test split)
    task: str = "mnist-5k"
    sram_budget: str = "256KB"
    flash_budget: str = "1MB"
    contrib: str = "auto"  # a contrib.json, or one of ANALYSES (see choose_analysis)
    steps: int = 3000  # batch-1 training steps on the host C engine
    lr: float | str = "auto"  # batch-1 SGD + QAS; auto: derived from the new task's head curvature (train/lr_auto.py)
    eval_samples: int = 500  # held-out samples of the new task
    eval_every: int = 500
    device_steps: int = 20  # steps of the firmware under QEMU (0: skip)
    core: str = "cortex-m7"  # the core the firmware is built for and run on (mcutrain.codegen.cores)
    population: int = 24
    generations: int = 15
    seed: int = 0
    out: str = "runs/demo"


@dataclass
class Progress:
    """Numbered stage lines on stderr with the time each stage took."""

    total: int
    n: int = 0
    t_stage: float = field(default_factory=time.perf_counter)
    times: dict = field(default_factory=dict)
    name: str = ""

    def stage(self, name: str, text: str) -> None:
        self.close()
        self.n, self.name, self.t_stage = self.n + 1, name, time.perf_counter()
        print(f"[{self.n}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.name:
            self.times[self.name] = round(time.perf_counter() - self.t_stage, 1)
            self.name = ""


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage; returns the result document (what the report folder is written from)."""
    if cfg.model is not None:
        from mcutrain.demo_graph import run_graph_demo

        return run_graph_demo(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(total=8)
    result: dict = {"config": asdict(cfg)}
    model, info, prep, own = _backbone(cfg, progress, result)
    int8 = _quantize(model, info, own, cfg, progress, result, out)
    task, qmodel = _new_task(int8, cfg, progress, result)
    contrib = choose_analysis(out / "model-int8.safetensors", int8, cfg, progress, result)
    plan = _search(qmodel, contrib, cfg, progress, result, out)
    cfg = replace(cfg, lr=_device_lr(qmodel, task, cfg, result, out / "scheme.json"))
    program, prepared = _compile(qmodel, plan, cfg, progress, result, out)
    samples = _samples(task, prepared, cfg)
    host = _train_on_host(program, prepared, plan, samples, cfg, progress, result, out)
    _device(program, prepared, plan, samples, host, cfg, progress, result, out)
    progress.close()
    result["stage_seconds"] = progress.times
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


# --------------------------------------------------------------------------------------- stages


def _backbone(cfg: DemoConfig, progress: Progress, result: dict):
    from mcutrain.data import Preprocessing, load_dataset
    from mcutrain.train.checkpoint import load_checkpoint
    from mcutrain.train.evaluate import evaluate

    model, info = load_checkpoint(cfg.checkpoint)
    own_name = cfg.data or info.dataset or DEFAULT_BACKBONE_DATA
    own = load_dataset(own_name, seed=_split_seed(info))
    if cfg.own_eval_samples:
        own = replace(own, test=own.test.subset(cfg.own_eval_samples, cfg.seed))
    prep = Preprocessing.from_dict(info.preprocessing)
    progress.stage("backbone", f"backbone {info.model} @ {info.resolution}x{info.resolution} "
                               f"({Path(cfg.checkpoint).name}): float accuracy on {own_name} "
                               f"({len(own.test):,} test images)")
    result["backbone"] = {"checkpoint": str(cfg.checkpoint), "model": info.model, "resolution": info.resolution,
                          "data": own_name, "test_n": len(own.test),
                          "float_accuracy": evaluate(model, own.test, info.resolution, prep)["accuracy"]}
    return model, info, prep, own


def _split_seed(info) -> int:
    return int(info.training.get("config", {}).get("seed", 0))


def _quantize(model, info, own, cfg: DemoConfig, progress: Progress, result: dict, out: Path):
    from mcutrain.data import Preprocessing
    from mcutrain.io.atomic import file_sha256
    from mcutrain.io.identity import qmodel_identity
    from mcutrain.quant.model_file import save_qmodel
    from mcutrain.quant.quantize import quantize_model
    from mcutrain.quant.sim_model import Int8Net
    from mcutrain.train.evaluate import evaluate

    progress.stage("quantize", "quantizing to int8 (BatchNorm folded, calibrated, fixed-point requantization)")
    qmodel = quantize_model(model, info, own.train, seed=_split_seed(info),
                            calibration_data=result["backbone"]["data"])
    path = out / "model-int8.safetensors"
    save_qmodel(path, qmodel)
    acc = evaluate(Int8Net(qmodel), own.test, info.resolution, Preprocessing.from_dict(info.preprocessing))
    result["backbone"].update(int8_accuracy=acc["accuracy"], int8_model=str(path), int8_sha256=file_sha256(path),
                              int8_identity=qmodel_identity(qmodel), int8_provenance=qmodel.provenance)
    return qmodel


def _new_task(qmodel, cfg: DemoConfig, progress: Progress, result: dict):
    from mcutrain.data import load_dataset
    from mcutrain.quant.head import new_head

    task = load_dataset(cfg.task, seed=cfg.seed)
    progress.stage("task", f"new task {cfg.task}: {task.num_classes} classes, {len(task.train):,} training "
                           f"samples; a new zero int8 head")
    result["task"] = {"name": cfg.task, "classes": task.num_classes, "train_n": len(task.train),
                      "test_n": len(task.test)}
    return task, new_head(qmodel, task.classes)


def _device_lr(qmodel, task, cfg: DemoConfig, result: dict, scheme: Path) -> float:
    """The rate compiled into the C: ``--lr``, or for ``auto`` the simulation's ``--lr auto`` under the
    searched scheme scaled to batch 1 (``finetune.device_auto_lr``); recorded in the result."""
    from mcutrain.train import lr_auto
    from mcutrain.train.finetune import device_auto_lr

    if not lr_auto.is_auto(cfg.lr):
        result["lr"] = {"lr": cfg.lr, "source": "--lr"}
        return cfg.lr
    lr, choice = device_auto_lr(qmodel, cfg.task, str(scheme), seed=cfg.seed, dataset=task)
    result["lr"] = {"lr": lr, "source": "auto", "batch32": choice.as_dict()}
    print(f"  {choice.summary()}; batch 1: {lr:.3g}", file=sys.stderr, flush=True)
    return lr


def choose_analysis(model_path: Path, int8, cfg: DemoConfig, progress: Progress, result: dict):
    """The contribution analysis the search uses: THE one place that chooses it, for a zoo int8 model
    and for an imported graph (``mcutrain.demo_graph``) alike.

    ``cfg.contrib`` a contrib.json: that analysis (refused if made for another model, as ``mcutrain
    search`` refuses it); "auto": the bundled analysis when it was made for this model (by recipe) and
    task, else the fast estimate; "fast": the gradient-based estimate (``search.fast``, seconds; its
    scores calibrated by one short fine-tune); "quick": a quick fine-tune analysis (the last 12 convs at
    most, ratios 1/4 and 1, 300 samples, 1 epoch per run). Why fast before quick: one epoch on 300
    samples leaves most runs at the zero head's accuracy, so the quick analysis mostly measures noise
    (issue 14), while the estimate ranks candidates about as well as two long fine-tune analyses agree
    with each other (docs/results/fast_analysis.md)."""
    from mcutrain.io.identity import qmodel_identity
    from mcutrain.search import AnalysisConfig, analyze, contrib_from_doc, load_contrib
    from mcutrain.search.contrib import check_analysis_model
    from mcutrain.train import model_kind as mk

    if cfg.contrib not in ANALYSES:
        progress.stage("contrib", f"contribution analysis: {cfg.contrib}")
        result["contrib"] = {"source": cfg.contrib}
        given = load_contrib(cfg.contrib)
        check_analysis_model(given, int8, str(model_path), source=cfg.contrib)  # as `mcutrain search` does
        return given
    if cfg.contrib == "auto" and DEFAULT_CONTRIB.is_file() and not mk.is_graph(int8):
        cached = load_contrib(DEFAULT_CONTRIB)
        if bundled_analysis_matches(cached.doc, int8.provenance, cfg.task):
            doc = cached.doc
            same = doc["model"].get("identity") == qmodel_identity(int8)
            progress.stage("contrib", f"contribution analysis: bundled ({DEFAULT_CONTRIB.name}, "
                                      f"{doc.get('runs', '?')} runs; same checkpoint, quantizer settings and task"
                                      f"{'' if same else '; the int8 model differs in its last bits here'})")
            result["contrib"] = {"source": "bundled", "path": str(DEFAULT_CONTRIB), "same_int8_model": same}
            return cached
    if cfg.contrib in ("auto", "fast"):
        return _fast_analysis(model_path, cfg, progress, result)
    n_convs = len(mk.convs(int8))
    layers = min(12, n_convs)  # small networks: every conv
    progress.stage("contrib", f"contribution analysis: quick (last {layers} convs, ratios 1/4 and 1, 300 samples, "
                              f"1 epoch per run)")
    acfg = AnalysisConfig(model=str(model_path), data=cfg.task, out=str(Path(cfg.out) / "contrib.json"),
                          epochs=1, train_subset=300, eval_subset=300, lr="auto", seed=cfg.seed,
                          layers=f"last:{layers}", ratios="1/4,1",
                          bias_grid=[k for k in (1, 2, 4, 8, 16) if k <= n_convs])
    doc = analyze(acfg, progress=True)
    result["contrib"] = {"source": "quick", "path": acfg.out, "runs": doc["runs"], "failed_runs": len(doc["unstable"])}
    return contrib_from_doc(doc)


def _fast_analysis(model_path: Path, cfg: DemoConfig, progress: Progress, result: dict):
    """The fast estimate at the demo's learning rate (its own derived rate under ``--lr auto``)."""
    from mcutrain.search.fast import estimate_contrib

    progress.stage("contrib", "contribution analysis: fast (gradients of the int8 simulation, every conv)")
    out = str(Path(cfg.out) / "contrib.json")
    contrib, seconds = estimate_contrib(str(model_path), cfg.task, out, lr=cfg.lr, seed=cfg.seed)
    calibration = contrib.doc["settings"].get("calibration", {})
    result["contrib"] = {"source": "fast", "path": out, "seconds": round(seconds, 1),
                         **({"warning": calibration["warning"]} if "warning" in calibration else {})}
    return contrib


def bundled_analysis_matches(doc: dict, provenance: dict, task: str) -> bool:
    """Whether an analysis document was made for the int8 model that ``provenance`` describes, on
    ``task``: the same quantization recipe (checkpoint tensors, quantizer version, calibration data,
    batches, batch size, seed; ``io.identity.RECIPE_KEYS``) and the same task name. Not the int8
    file's sha256: a container change or a last-bit difference elsewhere would orphan the analysis."""
    from mcutrain.io.identity import quantization_recipe

    recipe = quantization_recipe(provenance)
    model, data = doc.get("model"), doc.get("data")
    return (recipe is not None and isinstance(model, dict) and isinstance(data, dict)
            and model.get("recipe") == recipe and data.get("name") == task)


def search_budgets(cfg: DemoConfig, progress: Progress, priced: str):
    """(SRAM, Flash, the search's config): the chip's budgets, and the search's, which are those less
    the stack and code reserves; announces the search stage (both demos)."""
    from mcutrain.search import SearchConfig, parse_bytes

    sram, flash = parse_bytes(cfg.sram_budget, "SRAM budget"), parse_bytes(cfg.flash_budget, "Flash budget")
    scfg = SearchConfig(sram_budget=sram - STACK_RESERVE_BYTES, flash_budget=flash - CODE_RESERVE_BYTES,
                        population=cfg.population, generations=cfg.generations, seed=cfg.seed)
    progress.stage("search", f"evolutionary search under {sram // 1024} KB SRAM (less {STACK_RESERVE_BYTES // 1024} "
                             f"KB stack) and {flash // 1024} KB Flash (less {CODE_RESERVE_BYTES // 1024} KB code); "
                             f"{priced}")
    return sram, flash, scfg


def _search(qmodel, contrib, cfg: DemoConfig, progress: Progress, result: dict, out: Path):
    from mcutrain.search import SramCost, search
    from mcutrain.search.evolve import plot_progress
    from mcutrain.sparse import resolve, save_scheme

    sram, flash, scfg = search_budgets(cfg, progress, "exact compiled memory per candidate")
    outcome = search(SramCost(qmodel), contrib, scfg, progress=True, name=f"demo-{cfg.sram_budget}")
    save_scheme(out / "scheme.json", outcome.scheme)
    plot_progress([outcome.evolution, outcome.random], str(out / "search.png"),
                  f"{qmodel.spec.name} @{qmodel.resolution}: best predicted gain under {cfg.sram_budget}")
    plan = resolve(outcome.scheme, qmodel.spec)
    result["search"] = {
        "sram_budget_bytes": sram, "flash_budget_bytes": flash, "search_sram_budget_bytes": scfg.sram_budget,
        "search_flash_budget_bytes": scfg.flash_budget, "predicted_gain": outcome.gain,
        "random_predicted_gain": outcome.random.best.gain, "evaluations": outcome.evolution.evaluations,
        "minimum_sram_bytes": outcome.minimum.total_sram_bytes, "scheme": outcome.scheme.name,
        "bias_layers": sum(c.bias for c in plan.convs),
        "weight_layers": [{"layer": c.index, "ratio": c.weight_ratio} for c in plan.convs if c.updates_weight],
    }
    return plan


def _compile(qmodel, plan, cfg: DemoConfig, progress: Progress, result: dict, out: Path):
    from mcutrain.codegen import compile_for_codegen
    from mcutrain.sparse.permute import prepare_model

    progress.stage("compile", "compiling the training step (autodiff, prune, reorder, fuse, plan memory) and "
                              "generating C")
    prepared = prepare_model(qmodel, plan)
    program = compile_for_codegen(prepared, plan, lr=cfg.lr, seed=cfg.seed)
    record_compiled(program, result, out, f"{qmodel.spec.name} @{qmodel.resolution}")
    return program, prepared


def record_compiled(program, result: dict, out: Path, model_label: str) -> None:
    """The compiled program's memory in ``result["compiled"]`` and its memory report under ``out/memory``,
    for both demos; a program over the search's budget is an error (the search priced another one)."""
    from mcutrain.engine.reports import write_reports

    r = program.report
    if r["total_sram_bytes"] > result["search"]["search_sram_budget_bytes"]:
        raise McutrainError(f"the compiled C program needs {r['total_sram_bytes']} bytes of SRAM, over the search "
                            f"budget of {result['search']['search_sram_budget_bytes']}: the search's cost model and "
                            f"the C target disagree (mcutrain.codegen.compile_for_codegen vs mcutrain.search.cost)")
    result["compiled"] = {"total_sram_bytes": r["total_sram_bytes"], "arena_bytes": r["arena_bytes"],
                          "trainable_bytes": r["trainable_bytes"], "flash_bytes": r["flash_bytes"],
                          "inference_arena_bytes": r["inference_arena_bytes"], "ops": r["n_ops"],
                          "peak_op": r["peak_op"]}
    # The memory report is the compiled program's; written here, the result stays plain JSON.
    title = f"{model_label}, searched scheme: live memory per op"
    result["compiled"]["report_files"] = [str(f) for f in write_reports(program, out / "memory", result["compiled"],
                                                                        title)]


def _samples(task, prepared, cfg: DemoConfig):
    """The training stream (seeded order, every step a new sample while they last) and held-out samples."""
    from mcutrain.codegen.samples import int8_samples

    draw = dict(resolution=prepared.resolution, preprocessing=dict(prepared.preprocessing),
                input_scale=float(prepared.input.scale), input_zero=int(prepared.input.zero))
    train = int8_samples(task.train, cfg.steps, seed=cfg.seed, **draw)
    held_out = int8_samples(task.test, min(cfg.eval_samples, len(task.test)), seed=cfg.seed + 1, **draw)
    return train, held_out


def _train_on_host(program, prepared, plan, samples, cfg: DemoConfig, progress: Progress, result: dict, out: Path,
                   save_to: Path | None = None):
    from mcutrain.codegen.runner import run_host
    from mcutrain.codegen.targets import build_target

    train, held_out = samples
    progress.stage("train", f"training ON the generated C engine (host build): {cfg.steps} steps at batch 1, "
                            f"lr {cfg.lr}, held-out accuracy on {len(held_out[1])} samples every {cfg.eval_every}")
    target = build_target(program, prepared, plan, "host", out / "host", log=_quiet)
    host = run_host(out / "host", target, train, held_out, eval_every=cfg.eval_every, leave=True, save_to=save_to)
    result["host"] = {**{k: v for k, v in host.items() if k != "losses"}, "steps": len(host["losses"]),
                      "ms_per_step": round(1000 * host["seconds"] / max(1, len(host["losses"])), 2)}
    result["losses"] = host["losses"]
    return host


def _device(program, prepared, plan, samples, host, cfg: DemoConfig, progress: Progress, result: dict, out: Path):
    from mcutrain.codegen.cores import core_of
    from mcutrain.codegen.firmware import MemoryOverflowError, tools_available
    from mcutrain.codegen.runner import run_firmware
    from mcutrain.codegen.targets import build_target

    core = core_of(cfg.core)
    missing = tools_available("arm-none-eabi-gcc", "qemu-system-arm")
    if cfg.device_steps <= 0 or missing:
        why = "skipped (--device-steps 0)" if cfg.device_steps <= 0 else f"skipped: {missing}"
        progress.stage("device", f"{core.name} under QEMU: {why}")
        result["device"] = {"core": core.name, "skipped": why}
        return
    n = min(cfg.device_steps, len(samples[0][1]))
    progress.stage("device", f"the same program as {core.name} firmware ({core.part.name} map) under QEMU "
                             f"{core.machine}: {n} steps")
    try:
        target = build_target(program, prepared, plan, core.name, out / core.name, log=_quiet)
    except MemoryOverflowError as err:  # the search's budget was larger than this part: said, not fatal
        result["device"] = {"core": core.name, "skipped": f"skipped: {err}"}
        return
    train = (samples[0][0][:n], samples[0][1][:n])
    held_out = (samples[1][0][:8], samples[1][1][:8])
    run = run_firmware(out / core.name, target, train, held_out)
    equal = bool(np.array_equal(np.asarray(run["losses"], np.float32), np.asarray(host["losses"][:n], np.float32)))
    if not equal:
        raise McutrainError("the firmware under QEMU gave other losses than the host build of the same program "
                            "(they must be bit-identical); please report this with the report folder")
    result["device"] = {**{k: v for k, v in run.items() if k != "losses"}, "core": core.name, "steps": n,
                        "losses_equal_host": equal}


def _quiet(*_args) -> None:
    pass

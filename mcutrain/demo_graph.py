"""`mcutrain demo --model PATH.tflite`: the main job on a full-int8 TFLite model a user already deploys.

Why a module of its own: the default demo starts from a float backbone (pretrain, quantize); an
imported graph starts int8, keeps its own input (H x W x channels: the loader resizes the task's
images) and ends where it came from, as a .tflite. The stages (each printed as it starts):
  1. task      the new task's data;
  2. import    the .tflite -> an int8 graph model file with a new zero head for ``--task``;
  3. contrib   the contribution analysis, chosen by ``mcutrain.demo.choose_analysis`` (the one function
               that chooses it for both demos): a given contrib.json, else the fast gradient estimate;
  4. search    evolution under the SRAM / Flash budgets (less the stack and code reserves), each
               candidate priced by the exact compiled memory of the graph's training program; then the
               device rate, and a short batch-1 check that drops weights that would run away at it;
  5. compile   the training program for C (``compile_for_codegen``, what ``mcutrain compile`` reports);
  6. train     batch-1 SGD on the host build of the generated C; the trained parameters are saved as a
               device saves them (``mct_save``);
  7. device    the same firmware on an emulated Cortex-M7 (QEMU): losses equal to the host's, SRAM, Flash,
               instructions per step (skipped when the toolchain is missing or ``--device-steps 0``);
  8. export    the saved parameters written into the graph (as ``mcutrain export --params --program``)
               and exported to .tflite; LiteRT's reference kernels run it on the held-out samples and
               must give mcutrain's int8 outputs bit for bit.
Stages 6-7 and the samples are the zoo demo's own functions (``mcutrain.demo``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

__all__ = ["litert_check", "run_graph_demo"]

MODEL_FILE = "model-int8.mct"
TRAINED_TFLITE = "trained.tflite"
LITERT_CHECK_SAMPLES = 64  # held-out samples run through LiteRT (its reference kernels are slow)
BATCH1_CHECK_STEPS = 100  # batch-1 steps of the runaway-weight check (about 7 s on ResNet-8)


def run_graph_demo(cfg) -> dict:
    """Every stage for ``cfg.model`` (a .tflite); the result document has the zoo demo's sections plus
    ``import`` and ``export``, and ``backbone`` describes the imported model."""
    from mcutrain.demo import Progress, _device, _samples, _train_on_host, choose_analysis
    from mcutrain.train import model_kind as mk

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(total=8)
    result: dict = {"config": asdict(cfg)}
    task = _task(cfg, progress)
    model = _import(cfg, task, progress, result, out)
    contrib = choose_analysis(out / MODEL_FILE, model, cfg, progress, result)
    scheme, table, scheme_path = _search(model, contrib, cfg, progress, result, out)
    plan, rate = _steady_scheme(model, task, scheme, table, scheme_path, cfg, result)
    cfg = replace(cfg, lr=rate)
    program = _compile(model, plan, cfg, progress, result, out)
    facts = mk.target_facts(model, MODEL_FILE)
    samples = _samples(task, facts, cfg)
    saved = out / "host" / "saved.bin"
    host = _train_on_host(program, facts, plan, samples, cfg, progress, result, out, save_to=saved)
    _device(program, facts, plan, samples, host, cfg, progress, result, out)
    _export(model, saved, samples, progress, result, out)
    progress.close()
    result["stage_seconds"] = progress.times
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _task(cfg, progress):
    from mcutrain.data import load_dataset

    progress.stage("task", f"new task {cfg.task} (its images are resized to the model's input)")
    return load_dataset(cfg.task, seed=cfg.seed)


def _import(cfg, task, progress, result: dict, out: Path):
    """The .tflite as an int8 graph with a new zero head for the task, written as a graph model file."""
    from mcutrain.quant.graph_file import save_graph_model
    from mcutrain.quant.import_tflite import frozen_per_layer, import_tflite
    from mcutrain.train import model_kind as mk

    progress.stage("import", f"importing {Path(cfg.model).name} (full-int8 TFLite) with a new zero int8 head for "
                             f"{cfg.task}")
    model = import_tflite(cfg.model, classes=tuple(task.classes), new_head=True)
    save_graph_model(out / MODEL_FILE, model)
    p = model.preprocessing
    kinds: dict[str, int] = {}
    for node in model.graph.nodes:
        kinds[node.kind] = kinds.get(node.kind, 0) + 1
    result["backbone"] = {"model": Path(cfg.model).name, "imported": True, "source": str(cfg.model),
                          "resolution": f"{p['height']}x{p['width']}", "channels": p["channels"],
                          "convs": len(model.graph.convs()), "nodes": kinds,
                          "frozen_channels": sum(frozen_per_layer(model.graph).values()),
                          "int8_model": str(out / MODEL_FILE), "int8_identity": mk.content_identity(model)}
    result["task"] = {"name": cfg.task, "classes": task.num_classes, "train_n": len(task.train),
                      "test_n": len(task.test)}
    return model


def _search(model, contrib, cfg, progress, result: dict, out: Path):
    from mcutrain.demo import search_budgets
    from mcutrain.search import SramCost, search
    from mcutrain.search.evolve import plot_progress
    from mcutrain.sparse.table import save_table_scheme

    sram, flash, scfg = search_budgets(cfg, progress, "exact compiled memory of the graph's training program per "
                                                      "candidate")
    cost = SramCost(model)
    outcome = search(cost, contrib, scfg, progress=True, name=f"demo-{cfg.sram_budget}")
    path = out / "scheme.json"
    save_table_scheme(path, outcome.scheme, cost.table)
    plot_progress([outcome.evolution, outcome.random], str(out / "search.png"),
                  f"{result['backbone']['model']} @{result['backbone']['resolution']}: best predicted gain "
                  f"under {cfg.sram_budget}")
    result["search"] = {
        "sram_budget_bytes": sram, "flash_budget_bytes": flash, "search_sram_budget_bytes": scfg.sram_budget,
        "search_flash_budget_bytes": scfg.flash_budget, "predicted_gain": outcome.gain,
        "random_predicted_gain": outcome.random.best.gain, "evaluations": outcome.evolution.evaluations,
        "minimum_sram_bytes": outcome.minimum.total_sram_bytes, "scheme": outcome.scheme.name,
        "scheme_file": str(path), **_scheme_facts(model, cost.table.resolve(outcome.scheme)),
    }
    return outcome.scheme, cost.table, path


def _scheme_facts(model, plan) -> dict:
    from mcutrain.train import model_kind as mk

    return {"bias_layers": sum(c.bias for c in plan.convs),
            "weight_layers": [{"layer": c.index, "ratio": c.weight_ratio} for c in plan.convs if c.updates_weight],
            "analytic_extra_bytes": mk.analytic_bytes(model, plan)["total_bytes"]}


def _steady_scheme(model, task, scheme, table, path: Path, cfg, result: dict):
    """(plan, device rate): the searched scheme, less the weights that would run away at batch 1.

    Why: on a model fed raw pixels (the MLPerf Tiny ResNet-8: input scale 1.0), QAS makes the first
    conv's weights move several LSB per sample at the device's rate and pile up at the clamp; the
    analysis (batch 32, short) cannot see it (``train.batch1_check``, docs/bring-your-model.md).
    A short batch-1 run of the engine's step in the simulation, at the rate that will be compiled,
    names such convs; their weights are dropped (biases kept), the scheme file rewritten, the rate
    chosen again for the new scheme (a runaway conv also drags ``--lr auto`` down)."""
    from mcutrain.demo import _device_lr
    from mcutrain.sparse.table import save_table_scheme
    from mcutrain.train.batch1_check import batch1_check, scheme_without_weights

    rate = _device_lr(model, task, cfg, result, path)
    plan = table.resolve(scheme)
    check = batch1_check(model, plan, task, lr=rate, steps=BATCH1_CHECK_STEPS, seed=cfg.seed, eval_n=100)
    runaway = check.unstable()
    print(f"  {check.summary()}", file=sys.stderr, flush=True)
    result["batch1_check"] = {"lr": rate, "steps": check.steps, "unstable_weights": list(runaway)}
    if not runaway:
        return plan, rate
    scheme = scheme_without_weights(scheme, runaway)
    save_table_scheme(path, scheme, table)
    plan = table.resolve(scheme)
    result["search"].update(_scheme_facts(model, plan), dropped_weights=list(runaway))
    return plan, _device_lr(model, task, cfg, result, path)


def _compile(model, plan, cfg, progress, result: dict, out: Path):
    from mcutrain.codegen import compile_for_codegen
    from mcutrain.demo import record_compiled

    progress.stage("compile", "compiling the graph's training step (autodiff, prune, reorder, fuse, plan memory) "
                              "and generating C")
    program = compile_for_codegen(model.graph, plan, lr=cfg.lr, seed=cfg.seed)
    record_compiled(program, result, out, f"{result['backbone']['model']} @{result['backbone']['resolution']}")
    return program


def _export(model, saved: Path, samples, progress, result: dict, out: Path) -> None:
    """The host's saved parameters into the graph (checked as ``mct_restore`` checks them), then .tflite,
    then LiteRT on held-out samples: its outputs must be mcutrain's int8 outputs bit for bit."""
    from mcutrain.codegen.snapshot import device_trained_graph
    from mcutrain.io.atomic import file_sha256
    from mcutrain.models.tflite.writer import write_tflite

    progress.stage("export", f"exporting the trained parameters ({saved.name}) to {TRAINED_TFLITE}, checked with "
                             f"LiteRT's reference kernels")
    trained, applied = device_trained_graph(model.graph, saved.read_bytes(), out / "host", MODEL_FILE)
    path = out / TRAINED_TFLITE
    write_tflite(trained, path, description=f"mcutrain demo: {model.provenance.get('source', 'model')} trained "
                                            f"on the C engine ({applied['step']} steps)")
    result["export"] = {"tflite": str(path), "sha256": file_sha256(path), **applied,
                        **litert_check(path, samples[1])}


def litert_check(path: Path, held_out) -> dict:
    """LiteRT (reference kernels) on up to ``LITERT_CHECK_SAMPLES`` held-out samples of the exported model:
    whether its outputs equal mcutrain's int8 forward of the same file bit for bit, and its accuracy."""
    from mcutrain.models.tflite.reader import read_tflite
    from mcutrain.quant.from_tflite import graph_from_tflite
    from mcutrain.quant.graph_forward import graph_forward

    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return {"litert": "skipped: ai-edge-litert is not installed (pip install ai-edge-litert)"}
    images, labels = held_out[0][:LITERT_CHECK_SAMPLES], held_out[1][:LITERT_CHECK_SAMPLES]
    graph = graph_from_tflite(read_tflite(path))
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    equal, predictions = 0, []
    for x in images:
        interp.set_tensor(inp, np.ascontiguousarray(x[None].transpose(0, 2, 3, 1)))
        interp.invoke()
        theirs = np.array(interp.get_tensor(outp))
        ours = graph_forward(graph, x[None])[graph.output]
        equal += int(np.array_equal(theirs, ours))
        predictions.append(int(theirs.reshape(-1).argmax()))
    n = len(labels)
    return {"litert": "checked", "litert_samples": n, "litert_equal_samples": equal,
            "litert_bit_exact": equal == n,
            "litert_accuracy": float(np.mean(np.asarray(predictions) == labels)) if n else None}

"""`mcutrain demo --model PATH.tflite` end to end on a tiny synthetic full-int8 .tflite (a depthwise-separable
graph with a grey 13 x 9 input, written by mcutrain's TFLite writer): every stage runs for real, cut small;
the Cortex-M7 stage runs when its toolchain is installed (else it is skipped and says why)."""

import json

import numpy as np
import pytest

from mcutrain.codegen.firmware import tools_available
from mcutrain.data import load_dataset
from mcutrain.demo import STACK_RESERVE_BYTES, DemoConfig, run_demo
from mcutrain.models.tflite.writer import write_tflite
from mcutrain.sparse.builtin import graph_plan
from mcutrain.quant.graph_file import load_graph_model
from mcutrain.reports.demo import write_demo_report
from tests.helpers.trainable_graphs import VwwLike, trainable_graph

pytestmark = pytest.mark.xdist_group("demo")
M7_MISSING = tools_available("arm-none-eabi-gcc", "qemu-system-arm")
STEPS = 120


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_graph")
    tflite = root / "vww_like.tflite"
    write_tflite(trainable_graph(VwwLike, load_dataset("digits"), pretrain_epochs=2), tflite)
    out = root / "out"
    cfg = DemoConfig(model=str(tflite), task="digits", sram_budget="64KB", steps=STEPS, lr=0.05, eval_samples=80,
                     eval_every=60, device_steps=0 if M7_MISSING else 2, population=6, generations=2, out=str(out))
    result = run_demo(cfg)
    write_demo_report(result, out)
    return out, json.loads(json.dumps(result))


def test_every_stage_gives_its_numbers(demo):
    out, r = demo
    assert r["backbone"]["imported"] and r["backbone"]["resolution"] == "13x9" and r["backbone"]["convs"] == 5
    assert r["contrib"]["source"] == "fast"  # no matching analysis: the estimate, with the time it took recorded
    assert r["contrib"]["seconds"] == round(json.loads((out / "contrib.json").read_text())["wall_seconds"], 1)
    assert json.loads((out / "contrib.json").read_text())["settings"]["method"] == "fast"
    budget = 64 * 1024 - STACK_RESERVE_BYTES
    assert r["compiled"]["total_sram_bytes"] <= r["search"]["search_sram_budget_bytes"] == budget
    # the scheme the search wrote is a graph scheme finetune/compile take, and it is the one compiled
    plan = graph_plan(load_graph_model(out / "model-int8.mct").graph, r["search"]["scheme_file"])
    assert sum(c.bias for c in plan.convs) == r["search"]["bias_layers"]
    losses = np.asarray(r["losses"])
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert r["host"]["accuracy"]["after"] > r["host"]["accuracy"]["before"] + 0.1  # it learns on the C engine


def test_firmware_stage_runs_or_says_why(demo):
    _, r = demo
    if M7_MISSING:
        assert r["device"]["skipped"].startswith("skipped")
        return
    d = r["device"]
    assert d["losses_equal_host"] and d["steps"] == 2 and d["fits_256kb"]
    assert d["instructions_per_step"] > d["instructions_per_inference"] > 0


def test_the_trained_model_is_exported_and_litert_agrees(demo):
    out, r = demo
    e = r["export"]
    assert (out / "trained.tflite").is_file() and e["step"] == STEPS
    assert "classifier.weight" in e["trained"]
    pytest.importorskip("ai_edge_litert")
    assert e["litert"] == "checked" and e["litert_bit_exact"] and e["litert_samples"] == 64
    assert e["litert_accuracy"] > 0.2  # trained: well above the zero head's one class in ten
    text = (out / "summary.md").read_text()
    assert "imported full-int8 TFLite" in text and "LiteRT" in text


def test_the_cli_refuses_a_model_that_is_not_tflite(tmp_path):
    from mcutrain.cli import cmd_demo
    from mcutrain.errors import McutrainError
    from tests.helpers.cli import run_command

    with pytest.raises(McutrainError, match="give a full-int8 .tflite file"):
        run_command(cmd_demo, ["demo", "--model", str(tmp_path / "m.mct"), "--out", str(tmp_path / "o")])

"""`mcutrain analyze` and `mcutrain search` on an imported int8 graph (issue 13 item 1 and 5).

A small depthwise-separable graph (grey 13 x 9 input) and a small ResNet-like graph (ADD joins, a 1x1
stride-2 shortcut conv, which is not a chain) made the way a user makes them, for digits:
  * analyze -> search end to end through the CLI; the scheme file it writes is a ``"model": "graph"``
    scheme that ``finetune --scheme`` and ``compile --scheme`` take, and compile's peak is the search's;
  * ``SramCost`` of graph schemes equals ``compile_training``'s total SRAM (and its Flash) exactly;
  * the analytic model gives a graph's figures from each conv's own tensors;
  * an analysis of one graph is refused for another.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcutrain.cli import cmd_analyze, cmd_compile, cmd_search
from mcutrain.data import load_dataset
from mcutrain.engine.compile import compile_training
from mcutrain.errors import McutrainError
from mcutrain.quant.graph_file import save_graph_model
from mcutrain.search.contrib import load_contrib
from mcutrain.search.contrib_file import check_analysis_model
from mcutrain.search.cost import COMPILE_LR, COMPILE_SEED, SramCost
from mcutrain.sparse import ALLOWED_RATIOS, Scheme
from mcutrain.sparse.analytic import graph_conv_sizes
from mcutrain.sparse.builtin import graph_plan
from mcutrain.train import model_kind as mk
from tests.helpers.cli import run_command
from tests.helpers.trainable_graphs import ResNetLike, VwwLike, trainable_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def models(digits):
    return {"vww": trainable_model(VwwLike, digits, pretrain_epochs=1),
            "resnet": trainable_model(ResNetLike, digits, seed=1)}


@pytest.fixture(scope="module")
def vww_file(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "vww_like.mct"
    save_graph_model(path, models["vww"])
    return str(path)


def _json(module, argv: list[str]) -> dict:
    code, text = run_command(module, argv + ["--json"])
    assert code == 0
    return json.loads(text)


def test_analyze_then_search_writes_a_graph_scheme_compile_takes(tmp_path, vww_file, models):
    contrib = tmp_path / "contrib.json"
    analysis = _json(cmd_analyze, ["analyze", vww_file, "--data", "digits", "--out", str(contrib), "--epochs", "1",
                                   "--subset", "200", "--eval-subset", "100", "--lr", "0.01", "--layers", "last:2",
                                   "--ratios", "1/4,1", "--quiet"])
    doc = json.loads(contrib.read_text())
    names = [c.name for c in models["vww"].graph.convs()]
    assert doc["model"]["arch"] == "graph" and doc["model"]["n_convs"] == len(names) == 5
    assert doc["model"]["conv_names"] == names and doc["model"]["resolution"] == [13, 9]
    assert doc["model"]["identity"] == mk.content_identity(models["vww"])
    assert doc["grid"]["layers"] == [3, 4] and set(doc["weight"]) == {"3", "4"}
    assert analysis["runs"] == 1 + len(doc["grid"]["bias_k"]) + 4
    # a second analyze with the same settings takes every run from the cache
    again = _json(cmd_analyze, ["analyze", vww_file, "--data", "digits", "--out", str(contrib), "--epochs", "1",
                                "--subset", "200", "--eval-subset", "100", "--lr", "0.01", "--layers", "last:2",
                                "--ratios", "1/4,1", "--quiet"])
    assert again["runs_new"] == 0

    scheme_path = tmp_path / "scheme.json"
    found = _json(cmd_search, ["search", vww_file, "--contrib", str(contrib), "--budget", "3KB",
                               "--flash-budget", "1MB", "--population", "6", "--generations", "3",
                               "--out", str(scheme_path), "--quiet"])
    written = json.loads(scheme_path.read_text())
    assert written["model"] == "graph" and found["peak_sram_bytes"] <= 3 * 1024
    assert found["resolution"] == [13, 9] and found["analytic_extra_bytes"] > 0
    plan = graph_plan(models["vww"].graph, str(scheme_path))  # what finetune --scheme reads
    assert {c.index for c in plan.convs if c.bias} == set(range(5 - written["bias"]["last"], 5))
    compiled = _json(cmd_compile, ["compile", vww_file, "--scheme", str(scheme_path)])
    assert compiled["peak_sram_bytes"] == found["peak_sram_bytes"]
    assert compiled["flash_bytes"] == found["flash_bytes"]


@st.composite
def graph_schemes(draw, n: int):
    k = draw(st.integers(0, n))
    biased = list(range(n - k, n))
    weights = draw(st.lists(st.tuples(st.sampled_from(biased), st.sampled_from(ALLOWED_RATIOS)),
                            unique_by=lambda t: t[0], max_size=3)) if biased else []
    return Scheme("graph", "random", tuple(biased), tuple(weights))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), which=st.sampled_from(["vww", "resnet"]))
def test_sram_cost_of_a_graph_scheme_equals_compile(models, data, which):
    model = models[which]
    cost = SramCost(model)
    scheme = data.draw(graph_schemes(len(model.graph.convs())))
    plan = cost.table.resolve(scheme)
    report = compile_training(model.graph, plan, lr=COMPILE_LR, seed=COMPILE_SEED).report
    exact = cost.exact(scheme)
    assert exact.total_sram_bytes == report["total_sram_bytes"]
    assert exact.arena_bytes == report["arena_bytes"]
    assert SramCost(model).check(scheme, exact.total_sram_bytes).fits
    assert not SramCost(model).check(scheme, exact.total_sram_bytes - 1).fits


def test_analytic_model_reads_each_graph_conv_from_its_own_tensors(models):
    graph = models["resnet"].graph
    sizes = graph_conv_sizes(graph)
    shortcut = next(s for s in sizes if s.kernel_hw == (1, 1))
    # the 1x1 stride-2 shortcut reads the block input (8 channels, 15x15), not the conv before it
    assert (shortcut.in_ch, shortcut.out_ch, shortcut.in_hw, shortcut.out_hw) == (8, 16, (15, 15), (8, 8))
    i = sizes.index(shortcut)
    scheme = Scheme("graph", "one", (i,), ((i, 0.5),))
    figures = mk.analytic_bytes(models["resnet"], mk.conv_table(models["resnet"]).resolve(scheme))
    assert figures["parts"] == {"classifier_input": 16, "bias_masks": 16 * 8 * 8 // 8, "biases": 16 * 4,
                                "weight_inputs": 4 * 15 * 15, "weights": 16 * 4}
    assert figures["total_bytes"] == sum(figures["parts"].values()) and figures["resolution"] == [15, 15]


def test_an_analysis_of_one_graph_is_refused_for_another(tmp_path, models, vww_file):
    contrib = tmp_path / "c.json"
    _json(cmd_analyze, ["analyze", vww_file, "--data", "digits", "--out", str(contrib), "--epochs", "1",
                        "--subset", "64", "--eval-subset", "64", "--lr", "0.01", "--layers", "4", "--ratios", "1",
                        "--bias-grid", "1", "--quiet"])
    loaded = load_contrib(contrib)
    check_analysis_model(loaded, models["vww"], vww_file)
    with pytest.raises(McutrainError, match="made for another model"):
        check_analysis_model(loaded, models["resnet"], "resnet.mct")
    with pytest.raises(McutrainError, match="--resolution 16: an imported graph takes its own input size"):
        run_command(cmd_analyze, ["analyze", vww_file, "--data", "digits", "--out", str(tmp_path / "d.json"),
                                  "--resolution", "16", "--quiet"])

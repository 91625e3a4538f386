"""The fast contribution estimate (search/fast.py) on tiny models: the format search takes, determinism,
a ranking that puts an update that matters above one that cannot, both model kinds, and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mcutrain.cli import cmd_analyze
from mcutrain.data import load_dataset
from mcutrain.errors import McutrainError
from mcutrain.quant.graph_file import GraphModel, save_graph_model
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from mcutrain.search import load_contrib
from mcutrain.search.contrib import check_analysis_model, predicted_gain
from mcutrain.search.contrib_file import contrib_from_doc
from mcutrain.search.fast import FastConfig, estimate
from mcutrain.search.fast_compare import fast_path, spearman
from mcutrain.sparse.scheme import Scheme
from tests.helpers.cli import run_command
from tests.helpers.trainable_graphs import VwwLike, trainable_graph

SMALL = dict(data="digits", epochs=1, train_subset=128, grad_samples=64, eval_subset=128, lr=0.05, layers="12,13,14",
             ratios="1/8,1", bias_grid="1,2")


@pytest.fixture(scope="module")
def doc(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fast") / "contrib.json"
    return out, estimate(FastConfig(model=model, out=str(out), **SMALL))


def test_document_is_what_search_takes(model, doc):
    out, d = doc
    c = load_contrib(out)  # the validated reader search uses
    assert d["settings"]["method"] == "fast" and "FAST ESTIMATE" in d["note"]
    assert c.arch == "tiny" and c.n_convs == 15
    assert d["grid"] == {"bias_k": [1, 2, 3], "layers": [12, 13, 14], "ratios": [0.125, 1.0]}
    assert sorted(c.bias) == [1, 2, 3] and sorted(c.weight) == [12, 13, 14]
    check_analysis_model(c, load_qmodel(model), model)  # made for this model: the identity matches
    scheme = Scheme("tiny", "s", (13, 14), ((14, 1.0),))
    assert predicted_gain(c, scheme) == pytest.approx(c.bias[2] + c.weight[14][1.0])
    cal = d["settings"]["calibration"]
    assert cal["method"] == "run" and cal["scale"] > 0 and d["runs"] == 2
    # calibrated: the top candidate's predicted gain is its measured gain (floored at one image)
    k, layer, ratio = cal["run"]["bias"], cal["run"]["layer"], cal["run"]["ratio"]
    top = c.bias[k] + (c.weight[layer][ratio] if layer is not None else 0.0)
    assert top == pytest.approx(max(cal["measured_gain"], 1 / cal["val_n"]))
    assert "val_used" not in d["data"] and "eval_subset" not in d["settings"]  # no binomial noise claimed
    orders = d["settings"]["channels"]["14"]
    assert sorted(orders["order"]) == sorted(orders["gradient_rank"]) == list(range(len(orders["order"])))


def test_search_takes_it_unchanged(model, doc):
    from mcutrain.quant.head import new_head
    from mcutrain.search.cost import SramCost
    from mcutrain.search.evolve import SearchConfig, search

    qmodel = new_head(load_qmodel(model), load_dataset("digits", seed=0).classes)
    outcome = search(SramCost(qmodel), load_contrib(doc[0]), SearchConfig(sram_budget=10**6, population=6,
                                                                          generations=3), progress=False)
    assert outcome.gain > 0 and outcome.exact.total_sram_bytes <= 10**6
    assert outcome.scheme.weight_ratios  # with positive scores and no binding budget, some weight is updated


def test_estimate_contrib_for_the_demo(model, tmp_path):
    from mcutrain.search.fast import estimate_contrib

    contrib, seconds = estimate_contrib(model, "digits", str(tmp_path / "c.json"), lr=0.05, progress=False,
                                        train_subset=128, grad_samples=64, calibration="none")
    assert contrib.arch == "tiny" and contrib.doc["settings"]["method"] == "fast"
    assert seconds == contrib.doc["wall_seconds"]  # the time reported is the one the document records
    assert sorted(contrib.weight) == list(range(7, 15))  # the analysis's default grid: the last half


def test_deterministic_for_a_seed(model, doc):
    again = estimate(FastConfig(model=model, out="unused", **SMALL), write=False)
    first = doc[1]
    for key in ("baseline", "bias", "weight"):
        assert again[key] == first[key]
    assert again["settings"]["raw_scores"] == first["settings"]["raw_scores"]


def test_update_that_cannot_matter_ranks_last(model, tmp_path):
    """Conv 13 with every output channel frozen never moves (QAS factor 0), so neither its bias nor its
    weight can change anything; conv 14 right before the warmed head obviously can."""
    q = load_qmodel(model)
    convs = q.convs()
    frozen = replace(convs[13], frozen_channels=tuple(range(convs[13].out_ch)))
    path = tmp_path / "frozen.safetensors"
    save_qmodel(path, q.with_convs([frozen if i == 13 else c for i, c in enumerate(convs)], q.classifier))
    d = estimate(FastConfig(model=str(path), out="unused", **{**SMALL, "calibration": "none",
                                                              "statistic": "fisher"}), write=False)
    raw = d["settings"]["raw_scores"]["weight"]
    assert raw["13"]["1.0"] == 0.0 and raw["13"]["0.125"] == 0.0
    assert raw["14"]["1.0"] > 0.0 and raw["14"]["1.0"] >= raw["14"]["0.125"] > 0.0
    assert d["weight"]["14"]["1.0"] > d["weight"]["13"]["1.0"]
    assert 0 < max(v for row in d["weight"].values() for v in row.values()) <= 1  # "none": unitless, <= 1


def test_imported_graph(tmp_path):
    data = load_dataset("digits", seed=0)
    path = tmp_path / "graph.mct"
    save_graph_model(path, GraphModel(trainable_graph(VwwLike, data, pretrain_epochs=1), tuple(data.classes)))
    d = estimate(FastConfig(model=str(path), out=str(tmp_path / "g.json"), data="digits", epochs=1, train_subset=128,
                            grad_samples=64, eval_subset=128, lr=0.05, layers="last:3", ratios="1/4,1"))
    c = contrib_from_doc(d)
    n = c.n_convs
    assert sorted(c.weight) == list(range(n - 3, n)) and d["model"]["arch"].startswith("graph")
    assert all(d["settings"]["channels"][str(i)]["order"] == sorted(d["settings"]["channels"][str(i)]["order"])
               for i in c.weight)  # graphs are not permuted: the first channels train
    with pytest.raises(McutrainError, match="--layers"):
        estimate(FastConfig(model=str(path), out="x", data="digits", layers=f"{n}"), write=False)


def test_cli_fast_and_both(model, tmp_path):
    args = [model, "--data", "digits", "--epochs", "1", "--subset", "128", "--eval-subset", "128", "--lr", "0.05",
            "--layers", "13,14", "--ratios", "1", "--bias-grid", "1,2", "--quiet"]
    out = tmp_path / "fast.json"
    code, text = run_command(cmd_analyze, ["analyze", *args, "--out", str(out), "--method", "fast", "--json"])
    assert code == 0 and json.loads(text)["method"] == "fast"
    assert load_contrib(out).doc["settings"]["method"] == "fast"
    both = tmp_path / "both.json"
    code, _ = run_command(cmd_analyze, ["analyze", *args, "--out", str(both), "--method", "both"])
    fast = load_contrib(fast_path(str(both))).doc
    assert code == 0 and "method" not in load_contrib(both).doc["settings"]
    assert fast["settings"]["compared_with"]["weight_n"] == 2 and fast["settings"]["compared_with"]["bias_n"] == 2


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [5, 5, 5]) is None and spearman([1, 2], [1, 2]) is None
    assert np.isclose(spearman([1, 2, 2, 3], [1, 3, 2, 4]), 0.9486832980505138)


def test_calibration_run_stays_shallow():
    """The calibration run trains at most the last quarter of the convs, whatever scores higher deeper."""
    from mcutrain.search.fast import top_candidate
    from mcutrain.search.fast_run import Grid

    grid = Grid(12, tuple(range(1, 13)), tuple(range(6, 12)), (0.25, 1.0))
    deep = {6: 50.0, 7: 50.0, 8: 50.0, 9: 0.5, 10: 3.0, 11: 1.0}  # the deep weights score highest
    raw = {"bias": {k: float(k) for k in grid.bias_k},  # and deeper bias runs score higher
           "weight": {i: {0.25: 0.0, 1.0: deep[i]} for i in grid.layers}}
    assert top_candidate(raw, grid) == (2, 10)  # conv 10 at ratio 1 + 2 biases: 2 + 3 beats 3 + 0.5 and 3
    raw["weight"][10][1.0] = -5.0
    assert top_candidate(raw, grid) == (3, 9)  # 3 + 0.5 beats 3 biases alone and 1 + 1

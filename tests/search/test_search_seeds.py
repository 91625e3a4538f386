"""Seeds and the warmed head in the fine-tune analysis: per-seed records and paired standard errors, the
cache resuming per seed, old single-seed documents still read and searched, and ``shrunk`` using the seed
standard errors (``search.contrib_seeds``)."""

import json
import math
import shutil

import numpy as np
import pytest

from helpers.search import synthetic_contrib
from mcutrain.cli.main import main
from mcutrain.errors import McutrainError
from mcutrain.quant.random_model import random_qmodel
from mcutrain.search import AnalysisConfig, analyze, load_contrib, runs_path
from mcutrain.search import runs as runs_module
from mcutrain.search.contrib import contrib_from_doc, delta_se, noise_source, shrink, shrunk
from mcutrain.search.contrib_seeds import seeded
from mcutrain.search.cost import SramCost
from mcutrain.search.evolve import SearchConfig, search
from mcutrain.search.runs import RunSpec
from mcutrain.train import model_kind as mk

# 5 runs per seed: baseline, bias k = 1, 2, conv 13 at ratios 1/8 and 1 (each ~0.1 s on digits at 16x16).
# The model's own (trained) head: warmed further, every run would land on the same validation accuracy.
SETTINGS = dict(data="digits", epochs=1, train_subset=200, eval_subset=0, lr=0.1, layers="13", ratios="1/8,1",
                bias_grid="1,2", head_epochs=0)
PER_SEED = 5


@pytest.fixture(scope="module")
def two_seeds(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "contrib.json"
    return out, analyze(AnalysisConfig(model=model, out=str(out), seeds=2, **SETTINGS), progress=False)


def test_two_seeds_record_per_seed_accuracies_and_paired_se(two_seeds):
    out, doc = two_seeds
    assert doc["version"] == 2 and doc["runs"] == 2 * PER_SEED and doc["settings"]["seeds"] == 2
    s = doc["seeds"]
    assert s["n"] == 2 and s["finetune_seeds"] == [0, 1000]
    base, k2, w = np.array(s["baseline"]), np.array(s["bias"]["2"]), np.array(s["weight"]["13"]["1.0"])
    assert len(base) == len(k2) == len(w) == 2
    # the tables are the means of the deltas paired by seed; se = sd(d_s) / sqrt(N)
    assert doc["baseline"] == pytest.approx(base.mean())
    assert doc["bias"]["2"] == pytest.approx((k2 - base).mean())
    assert doc["weight"]["13"]["1.0"] == pytest.approx((w - k2).mean())
    assert doc["se"]["seeds"] == 2
    assert doc["se"]["bias"]["2"] == pytest.approx((k2 - base).std(ddof=1) / math.sqrt(2))
    assert doc["se"]["weight"]["13"]["1.0"] == pytest.approx((w - k2).std(ddof=1) / math.sqrt(2))
    assert doc["accuracy"]["bias"]["2"] == pytest.approx(k2.mean())  # readers ignoring the seeds see the means
    # the seeds are different draws: not every run gives the same accuracy twice
    all_runs = [s["baseline"]] + list(s["bias"].values()) + [v for row in s["weight"].values() for v in row.values()]
    assert any(a != b for a, b in all_runs)
    losses = {}
    for line in runs_path(out).read_text().splitlines()[1:]:
        entry = json.loads(line)
        losses[RunSpec.from_json(entry["run"])] = entry["record"]["train_loss_per_epoch"]
    assert len(losses) == 2 * PER_SEED
    assert all(losses[run] != losses[RunSpec(run.bias, run.layer, run.ratio, 1)] for run in losses if not run.seed)
    c = load_contrib(out)
    assert c.se is not None and c.se.seeds == 2 and c.se.bias[2] == pytest.approx(doc["se"]["bias"]["2"])


def test_cache_resumes_per_seed(model, two_seeds, tmp_path, monkeypatch):
    # a one-seed analysis first: seed 0's runs keep the keys of today's caches (no seed in the spec's JSON)
    out = tmp_path / "contrib.json"
    one = analyze(AnalysisConfig(model=model, out=str(out), **SETTINGS), progress=False)
    assert one["runs_new"] == PER_SEED and "se" not in one and one["seeds"]["n"] == 1
    assert RunSpec(2).to_json() == {"bias": 2, "layer": None, "ratio": 0.0}
    calls = []
    real = runs_module.finetune

    def counting(cfg, **kw):
        calls.append(cfg.seed)
        return real(cfg, **kw)

    monkeypatch.setattr(runs_module, "finetune", counting)
    two = analyze(AnalysisConfig(model=model, out=str(out), seeds=2, **SETTINGS), progress=False)
    assert two["runs_new"] == PER_SEED and calls == [1000] * PER_SEED  # only seed 1 trained
    assert two["seeds"] == two_seeds[1]["seeds"] and two["se"] == two_seeds[1]["se"]  # same runs, same results
    # and a rerun trains nothing
    calls.clear()
    again = analyze(AnalysisConfig(model=model, out=str(out), seeds=2, **SETTINGS), progress=False)
    assert again["runs_new"] == 0 and calls == []


def test_run_spec_round_trip_and_labels():
    for run in (RunSpec(0), RunSpec(3, seed=2), RunSpec(2, 13, 0.125, seed=1)):
        assert RunSpec.from_json(json.loads(json.dumps(run.to_json()))) == run
    assert RunSpec(2, 13, 0.125, seed=1).label == "w13@0.125+b2#s1" and RunSpec(0).label == "last-layer"
    assert RunSpec(1, seed=2).finetune_seed(5) == 2005
    assert seeded([RunSpec(0), RunSpec(1)], 2) == [RunSpec(0), RunSpec(1), RunSpec(0, seed=1), RunSpec(1, seed=1)]


def _as_version_1(doc: dict) -> dict:
    old = {k: v for k, v in json.loads(json.dumps(doc)).items() if k not in ("seeds", "se", "head")}
    old["version"] = 1
    old["settings"] = {k: v for k, v in old["settings"].items() if k not in ("seeds", "head_epochs")}
    return old


def test_old_single_seed_documents_load_and_search(two_seeds, tmp_path):
    old = contrib_from_doc(_as_version_1(two_seeds[1]))
    assert old.se is None and old.bias == load_contrib(two_seeds[0]).bias
    cost = SramCost(random_qmodel("tiny", 16, num_classes=10)[0])
    cfg = SearchConfig(sram_budget=10**6, population=6, generations=3, seed=0, noise_z=1.0)
    found = search(cost, old, cfg, progress=False)
    assert found.noise.startswith("binomial") and "n = 269" in found.noise
    seeded_found = search(cost, load_contrib(two_seeds[0]), cfg, progress=False)
    assert seeded_found.noise.startswith("seeds") and "2 paired seeds" in seeded_found.noise
    assert noise_source(old, 0).startswith("none")
    with pytest.raises(McutrainError, match="version 3 is not supported"):
        contrib_from_doc({**_as_version_1(two_seeds[1]), "version": 3})


def _with_se(contrib, se_bias: dict, se_weight: dict, seeds: int = 3):
    doc = json.loads(json.dumps(contrib.doc))
    doc["version"] = 2
    doc["data"]["val_used"] = 400
    doc["se"] = {"seeds": seeds, "baseline": 0.01, "bias": {str(k): v for k, v in se_bias.items()},
                 "weight": {str(i): {str(r): v for r, v in row.items()} for i, row in se_weight.items()}}
    return contrib_from_doc(doc)


def test_shrunk_uses_the_seed_standard_errors():
    c = synthetic_contrib("tiny", 15, {13: {1.0: 0.1, 0.25: 0.02}}, {2: 0.2, 5: -0.1})
    s = _with_se(c, {2: 0.05, 5: 0.0}, {13: {1.0: 0.01, 0.25: 0.03}})
    out = shrunk(s, 2.0)
    assert out.bias[2] == pytest.approx(shrink(0.2, 0.05, 2.0)) == pytest.approx(0.1)
    assert out.bias[5] == pytest.approx(-0.1)  # se 0: a sure delta is kept whole
    assert out.weight[13][1.0] == pytest.approx(0.08) and out.weight[13][0.25] == 0.0
    # the binomial rule would have given another value: the seeds are what was used
    binomial = delta_se(0.7, 0.5, 400)
    assert out.bias[2] != pytest.approx(shrink(0.2, binomial, 2.0))
    assert shrunk(s, 0) is s and out.se is s.se


@pytest.mark.parametrize("change, message", [
    (lambda se: se["bias"].pop("5"), "exactly the deltas"),
    (lambda se: se["weight"]["13"].update({"0.25": -0.1}), "standard error in"),
    (lambda se: se["bias"].update({"2": float("nan")}), "standard error in"),
    (lambda se: se.update({"seeds": 1}), "se.seeds"),
])
def test_malformed_se_is_refused(change, message):
    c = synthetic_contrib("tiny", 15, {13: {1.0: 0.1, 0.25: 0.02}}, {2: 0.2, 5: -0.1})
    doc = json.loads(json.dumps(_with_se(c, {2: 0.05, 5: 0.0}, {13: {1.0: 0.01, 0.25: 0.03}}).doc))
    change(doc["se"])
    with pytest.raises(McutrainError, match=message):
        contrib_from_doc(doc)


def test_head_epochs_warm_start_every_run(model, tmp_path):
    out = tmp_path / "contrib.json"
    settings = dict(SETTINGS, layers="14", ratios="1", bias_grid="1", head_epochs=3)
    doc = analyze(AnalysisConfig(model=model, out=str(out), **settings), progress=False)
    head = doc["head"]
    assert head["epochs"] == 3 and len(head["train_loss_per_epoch"]) == 3 and isinstance(head["converged"], bool)
    assert doc["settings"]["head_epochs"] == 3
    # the document names the model analysed (search checks it), not the warmed copy
    assert doc["model"]["identity"] == mk.content_identity(mk.load_trainable(model))
    warmed = mk.load_trainable(head["path"])
    assert mk.content_identity(warmed) != doc["model"]["identity"]  # the head was trained
    # the cache identity names the warm start, so a zero-head rerun on the same output is refused
    with pytest.raises(McutrainError, match="head_epochs"):
        analyze(AnalysisConfig(model=model, out=str(out), **dict(settings, head_epochs=0)), progress=False)
    shutil.rmtree(tmp_path)


def test_cli_refuses_bad_seeds(model, tmp_path, capsys):
    code = main(["analyze", model, "--data", "digits", "--out", str(tmp_path / "c.json"), "--seeds", "0", "--quiet"])
    assert code == 2 and "--seeds must be in [1, 100]" in capsys.readouterr().err
    assert not runs_path(tmp_path / "c.json").exists()


def test_a_head_that_fails_to_learn_leaves_the_zero_head_and_says_so(model, tmp_path):
    settings = dict(SETTINGS, layers="14", ratios="1", bias_grid="1", head_epochs=2, lr=1e6)
    doc = analyze(AnalysisConfig(model=model, out=str(tmp_path / "c.json"), **settings), progress=False)
    assert "failed to learn" in doc["head"]["failed"] and doc["head"]["converged"] is False
    assert load_contrib(tmp_path / "c.json").baseline == doc["baseline"]  # the analysis still ran and wrote


def test_search_summary_names_the_standard_errors_it_used(model, two_seeds, tmp_path):
    from mcutrain.api.analysis import search_scheme

    result = search_scheme(model, two_seeds[0], "1MB", tmp_path / "s.json", population=4, generations=2,
                           noise_z=1.0, quiet=True)
    assert result.payload["noise_se"].startswith("seeds") and "standard errors: seeds" in result.text()

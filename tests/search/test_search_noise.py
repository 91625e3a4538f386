"""Noise-aware objective: the shrinkage math, z = 0 is exactly the old objective, z > 0 drops noise, the CLI flag."""

import json
import math
import random

import pytest

from helpers.cli import run_command
from helpers.search import synthetic_contrib
from mcutrain.cli import cmd_search
from mcutrain.cli.main import main
from mcutrain.errors import McutrainError
from mcutrain.quant.random_model import random_qmodel
from mcutrain.search.contrib import contrib_from_doc, delta_se, predicted_gain, shrink, shrunk, validation_size
from mcutrain.search.cost import SramCost
from mcutrain.search.evolve import DEFAULT_NOISE_Z, SearchConfig, Space, evolve, search

MODEL, RES, N = "tiny", 32, 15


@pytest.fixture(scope="module")
def cost():
    return SramCost(random_qmodel(MODEL, RES, num_classes=10)[0])


def with_n(contrib, **data):
    """The same analysis with ``data`` fields (e.g. val_used) recorded, re-validated."""
    doc = json.loads(json.dumps(contrib.doc))
    doc["data"].update(data)
    return contrib_from_doc(doc)


def test_shrink_soft_thresholds_towards_zero():
    assert shrink(0.05, 0.02, 1.0) == pytest.approx(0.03)
    assert shrink(-0.05, 0.02, 1.0) == pytest.approx(-0.03)  # a noisy loss is shrunk too, not dropped
    assert shrink(0.05, 0.02, 2.0) == pytest.approx(0.01)
    assert shrink(0.03, 0.02, 2.0) == 0.0 and shrink(-0.03, 0.02, 2.0) == 0.0
    for d in (0.07, -0.013, 0.0):
        assert shrink(d, 0.02, 0.0) == d


def test_delta_se_is_the_binomial_error_of_a_difference():
    assert delta_se(0.75, 0.75, 500) == pytest.approx(math.sqrt(2 * 0.75 * 0.25 / 500))  # 2.74 points
    assert delta_se(0.8, 0.6, 100) == pytest.approx(math.sqrt((0.16 + 0.24) / 100))
    assert delta_se(1.0, 0.0, 50) == 0.0


def test_shrunk_uses_each_deltas_own_accuracies_and_n():
    c = with_n(synthetic_contrib(MODEL, N, {13: {1.0: 0.1}}, {2: 0.2, 5: -0.1}), val_used=400)
    s = shrunk(c, 1.5)
    base = 0.5  # synthetic_contrib's baseline
    assert s.bias[2] == pytest.approx(0.2 - 1.5 * math.sqrt((0.7 * 0.3 + base * base) / 400))
    assert s.bias[5] == pytest.approx(-0.1 + 1.5 * math.sqrt((0.4 * 0.6 + base * base) / 400))
    # the weight run at conv 13 is measured against the bias-only run k = 15 - 13 = 2 (accuracy 0.7)
    assert s.weight[13][1.0] == pytest.approx(0.1 - 1.5 * math.sqrt((0.8 * 0.2 + 0.7 * 0.3) / 400))
    assert s.baseline == c.baseline and s.arch == c.arch and s.n_convs == c.n_convs


def test_validation_size_from_the_document_and_its_fallback():
    c = synthetic_contrib(MODEL, N, {14: {1.0: 0.01}})
    assert validation_size(with_n(c, val_used=269)) == 269
    doc = json.loads(json.dumps(c.doc))
    doc["settings"] = {"eval_subset": 500}  # an analysis without data.val_used: its subset cap
    assert validation_size(contrib_from_doc(doc)) == 500
    assert validation_size(c) is None
    with pytest.raises(McutrainError, match="records no validation-set size.*--noise-z 0"):
        shrunk(c, 1.0)
    assert shrunk(c, 0.0) is c  # z = 0 needs no n
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(McutrainError, match="--noise-z must be a finite number >= 0"):
            shrunk(with_n(c, val_used=100), bad)


def test_z0_is_exactly_the_old_objective(cost):
    rng = random.Random(11)
    weights = {i: {r: round(rng.uniform(-0.03, 0.03), 4) for r in (0.25, 1.0)} for i in range(7, N)}
    c = with_n(synthetic_contrib(MODEL, N, weights, {1: 0.01, 3: 0.02, 8: -0.01, 15: 0.03}), val_used=300)
    cfg = SearchConfig(sram_budget=10**6, population=8, generations=5, seed=3, noise_z=0.0)
    old = evolve(Space(c), cost, cfg, MODEL, progress=False)  # the objective before noise_z existed
    new = search(cost, c, cfg, progress=False)
    assert new.evolution.best.genome == old.best.genome and new.evolution.history == old.history
    assert new.gain == old.best.gain == new.unshrunk_gain == predicted_gain(c, new.scheme)
    space = Space(shrunk(c, 0.0))
    for g in old.evaluated:
        assert space.gain(g.genome) == predicted_gain(c, g.genome.scheme(MODEL, N))


def test_positive_z_stops_piling_up_small_deltas(cost):
    # one real gain (conv 14, +20 points) and many deltas of +1 point, well inside the noise at n = 200
    weights = {i: {1.0: 0.01} for i in range(8, 14)} | {14: {1.0: 0.2}}
    c = with_n(synthetic_contrib(MODEL, N, weights, {k: 0.0 for k in range(1, N + 1)}), val_used=200)
    plain = search(cost, c, SearchConfig(sram_budget=10**6, population=10, generations=8, seed=0, noise_z=0.0),
                   progress=False)
    noisy = search(cost, c, SearchConfig(sram_budget=10**6, population=10, generations=8, seed=0, noise_z=1.0),
                   progress=False)
    assert len(plain.scheme.weight_ratios) > 1  # the plain sum takes the +1-point layers too
    assert noisy.scheme.weight_ratios == ((14, 1.0),)
    assert noisy.unshrunk_gain == pytest.approx(0.2) and 0 < noisy.gain < 0.2
    assert noisy.exact.total_sram_bytes < plain.exact.total_sram_bytes


def test_cli_noise_z_flag(tmp_path):
    c = with_n(synthetic_contrib(MODEL, N, {13: {1.0: 0.02}, 14: {0.25: 0.01, 1.0: 0.3}}, {1: 0.004, 15: 0.01}),
               val_used=250)
    path = tmp_path / "contrib.json"
    path.write_text(json.dumps(c.doc))
    common = ["search", MODEL, "--contrib", str(path), "--budget", "1MB", "--population", "4", "--generations", "3",
              "--quiet", "--json"]
    code, text = run_command(cmd_search, common + ["--out", str(tmp_path / "a.json"), "--noise-z", "1.5"])
    r = json.loads(text)
    assert code == 0 and r["noise_z"] == 1.5
    assert r["predicted_gain"] < r["unshrunk_predicted_gain"]
    code, text = run_command(cmd_search, common + ["--out", str(tmp_path / "b.json")])
    assert json.loads(text)["noise_z"] == DEFAULT_NOISE_Z
    code, text = run_command(cmd_search, common + ["--out", str(tmp_path / "c.json"), "--noise-z", "0"])
    r = json.loads(text)
    assert r["predicted_gain"] == r["unshrunk_predicted_gain"]


def test_cli_refuses_a_negative_noise_z(tmp_path, capsys):
    c = with_n(synthetic_contrib(MODEL, N, {14: {1.0: 0.02}}), val_used=250)
    path = tmp_path / "contrib.json"
    path.write_text(json.dumps(c.doc))
    code = main(["search", MODEL, "--contrib", str(path), "--budget", "1MB", "--out", str(tmp_path / "s.json"),
                 "--noise-z", "-1", "--quiet"])
    assert code == 2 and "--noise-z must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()

"""Evolutionary search: the budget is a hard constraint, seeds reproduce, evolution beats random search."""

import random

import pytest

from helpers.search import synthetic_contrib
from mcutrain.quant.random_model import random_qmodel
from mcutrain.search.budget import BudgetError
from mcutrain.search.cost import SramCost
from mcutrain.search.evolve import Genome, SearchConfig, Space, evolve, random_search, search

MODEL, RES, N = "tiny", 32, 15


@pytest.fixture(scope="module")
def cost():
    return SramCost(random_qmodel(MODEL, RES, num_classes=10)[0])


def random_gains(seed: int, layers=range(5, N)) -> dict:
    rng = random.Random(seed)
    return {i: {r: round(rng.uniform(-0.02, 0.02), 4) for r in (0.125, 0.25, 0.5, 1.0)} for i in layers}


def test_evolution_beats_random_search_where_the_answer_is_known(cost):
    # Bias gains 0 and a budget nothing reaches: the best scheme takes, in every layer, its best ratio
    # if that gain is positive. Random subsets of 10 layers x 5 choices average about 0.
    weights = random_gains(5)
    contrib = synthetic_contrib(MODEL, N, weights, {k: 0.0 for k in range(1, N + 1)})
    optimum = sum(max(0.0, *row.values()) for row in weights.values())
    cfg = SearchConfig(sram_budget=10**6, population=10, generations=10, seed=0)
    space = Space(contrib)
    evo, rnd = evolve(space, cost, cfg, MODEL, progress=False), random_search(space, cost, cfg, MODEL, progress=False)
    assert evo.evaluations == rnd.evaluations == 100
    assert evo.best.gain <= optimum + 1e-12 and rnd.best.gain <= optimum + 1e-12
    assert evo.best.gain > rnd.best.gain
    assert optimum - evo.best.gain < 0.5 * (optimum - rnd.best.gain)
    assert evo.history == sorted(evo.history)  # best-so-far never goes down


@pytest.mark.parametrize("extra", [0, 600, 3000, 9000])
def test_budget_is_never_exceeded(cost, extra):
    contrib = synthetic_contrib(MODEL, N, random_gains(1, layers=range(8, N)),
                                {1: 0.01, 2: 0.02, 4: 0.03, 8: 0.05, 15: 0.06})
    minimum = cost.exact(Genome(0, ()).scheme(MODEL, N)).total_sram_bytes
    cfg = SearchConfig(sram_budget=minimum + extra, population=6, generations=4, seed=extra)
    out = search(cost, contrib, cfg, progress=False)
    assert out.exact.total_sram_bytes <= cfg.sram_budget
    assert out.minimum.total_sram_bytes == minimum
    # the search's verdicts agree with the exact figure (a sample of the candidates it judged)
    judged = out.evolution.evaluated + out.random.evaluated
    assert len(judged) == out.evolution.evaluations + out.random.evaluations
    for e in random.Random(extra).sample(judged, 6):
        assert e.feasible == (cost.exact(e.genome.scheme(MODEL, N)).total_sram_bytes <= cfg.sram_budget)


def test_flash_budget_is_respected(cost):
    contrib = synthetic_contrib(MODEL, N, random_gains(2, layers=range(10, N)))
    minimum = cost.exact(Genome(0, ()).scheme(MODEL, N))
    cfg = SearchConfig(sram_budget=10**6, flash_budget=minimum.flash_bytes + 100, population=6, generations=3)
    out = search(cost, contrib, cfg, progress=False)
    assert out.exact.flash_bytes <= cfg.flash_budget
    with pytest.raises(BudgetError, match=f"{minimum.flash_bytes} bytes"):
        search(cost, contrib, SearchConfig(sram_budget=10**6, flash_budget=minimum.flash_bytes - 1), progress=False)


def test_same_seed_same_scheme(cost):
    contrib = synthetic_contrib(MODEL, N, random_gains(3, layers=range(8, N)))
    cfg = SearchConfig(sram_budget=9000, population=6, generations=4, seed=7)
    a = search(cost, contrib, cfg, progress=False)
    b = search(SramCost(cost.qmodel), contrib, cfg, progress=False)  # a fresh memo too
    assert a.scheme == b.scheme and a.gain == b.gain
    assert a.evolution.history == b.evolution.history and a.random.history == b.random.history


def test_budget_below_the_classifier_only_scheme_is_refused(cost):
    contrib = synthetic_contrib(MODEL, N, random_gains(4, layers=range(12, N)))
    minimum = cost.exact(Genome(0, ()).scheme(MODEL, N)).total_sram_bytes
    with pytest.raises(BudgetError, match=f"training the classifier only needs {minimum} bytes"):
        search(cost, contrib, SearchConfig(sram_budget=minimum - 1), progress=False)

"""The search's memory cost is exactly `mcutrain compile`'s figure (property test on random schemes)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcutrain.engine.compile import compile_training
from mcutrain.quant.random_model import random_qmodel
from mcutrain.search.cost import COMPILE_LR, COMPILE_SEED, SramCost
from mcutrain.sparse import ALLOWED_RATIOS, Scheme, get_builtin, resolve
from mcutrain.sparse.permute import prepare_model
from mcutrain.sparse.scheme import backbone_convs

MODEL, RES = "tiny", 32


@pytest.fixture(scope="module")
def cost():
    return SramCost(random_qmodel(MODEL, RES, num_classes=10)[0])


@st.composite
def schemes(draw):
    n = len(backbone_convs(random_qmodel(MODEL, RES, num_classes=10)[0].spec))
    k = draw(st.integers(0, n))
    biased = list(range(n - k, n))
    weights = draw(st.lists(st.tuples(st.sampled_from(biased), st.sampled_from(ALLOWED_RATIOS)),
                            unique_by=lambda t: t[0], max_size=4)) if biased else []
    return Scheme(MODEL, "random", tuple(biased), tuple(weights))


def compiled(cost: SramCost, scheme: Scheme) -> dict:
    plan = resolve(scheme, cost.qmodel.spec)
    return compile_training(prepare_model(cost.qmodel, plan), plan, lr=COMPILE_LR, seed=COMPILE_SEED).report


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scheme=schemes(), budget_fraction=st.floats(0.5, 1.5))
def test_cost_equals_compile_and_check_is_exact(cost, scheme, budget_fraction):
    report = compiled(cost, scheme)
    exact = cost.exact(scheme)
    assert exact.total_sram_bytes == report["total_sram_bytes"]
    assert exact.arena_bytes == report["arena_bytes"]
    assert exact.trainable_bytes == report["trainable_bytes"]
    assert exact.flash_bytes == report["flash_bytes"]
    budget = int(report["total_sram_bytes"] * budget_fraction)
    fresh = SramCost(cost.qmodel)  # no memo: the bounds and the early stop decide
    assert fresh.check(scheme, budget).fits == (report["total_sram_bytes"] <= budget)
    flash = report["flash_bytes"] - 1
    assert not fresh.check(scheme, 10**9, flash_budget=flash).fits


@pytest.mark.parametrize("name", ["paper-99kb", "last-layer"])
def test_cost_equals_compile_on_a_paper_network(name):
    model = random_qmodel("mcunet-5fps", 64, num_classes=10)[0]
    scheme = get_builtin(name, "mcunet-5fps")
    assert SramCost(model).exact(scheme).total_sram_bytes == compiled(SramCost(model), scheme)["total_sram_bytes"]


def test_check_at_the_exact_figure_is_yes_one_byte_less_is_no(cost):
    scheme = get_builtin("last-k:3", MODEL)
    total = cost.exact(scheme).total_sram_bytes
    assert SramCost(cost.qmodel).check(scheme, total).fits
    assert not SramCost(cost.qmodel).check(scheme, total - 1).fits

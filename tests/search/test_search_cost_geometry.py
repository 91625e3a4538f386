"""Memory figures of models with general conv geometry (issue 13): the search's exact cost is
`compile`'s, the memory report's numbers are the planner's, and the analytic model reads the model's
own kernels, strides, padding and H x W input."""

import math

import numpy as np
import pytest

from mcutrain.engine.compile import compile_training
from mcutrain.engine.memory import ENGINE_STATE_BYTES, check_plan, lower_bound
from mcutrain.search.cost import COMPILE_LR, COMPILE_SEED, SramCost
from mcutrain.sparse import analytic_extra_bytes, get_builtin, resolve
from mcutrain.sparse.permute import prepare_model
from tests.helpers.geometry import general_qmodel


@pytest.mark.parametrize("variant, scheme", [("mixed", "last-k:6"), ("mixed", "full"), ("wide", "bias-only")])
def test_the_search_cost_and_the_report_are_the_planners(variant, scheme):
    q = general_qmodel(variant)
    plan = resolve(get_builtin(scheme, "tiny"), q.spec)
    program = compile_training(prepare_model(q, plan), plan, lr=COMPILE_LR, seed=COMPILE_SEED)
    r = program.report
    check_plan(program.train.plan)
    check_plan(program.inference.plan)
    assert r["arena_bytes"] == program.train.plan.arena_bytes >= r["arena_lower_bound_bytes"]
    assert r["arena_lower_bound_bytes"] == lower_bound(program.train.buffers)
    assert r["total_sram_bytes"] == r["arena_bytes"] + r["trainable_bytes"] + r["engine_state_bytes"]
    assert r["engine_state_bytes"] == ENGINE_STATE_BYTES
    masks = [t for t in program.graph.tensors.values() if t.role == "mask"]
    assert r["mask_bytes"] == sum(t.nbytes for t in masks) > 0
    exact = SramCost(q).exact(get_builtin(scheme, "tiny"))
    assert (exact.total_sram_bytes, exact.arena_bytes, exact.flash_bytes) == (r["total_sram_bytes"], r["arena_bytes"],
                                                                              r["flash_bytes"])


def test_the_engine_sizes_every_activation_from_the_models_geometry():
    q = general_qmodel("mixed")
    program = compile_training(q, resolve(get_builtin("full", "tiny"), q.spec), lr=0.1, seed=1)
    g = program.graph
    assert g.tensor("image").shape == (1, 1, 20, 28)
    for conv, (h, w) in zip(q.convs(), q.activation_sizes(), strict=True):
        assert g.tensor(conv.name).shape == (1, conv.out_ch, h, w)


def test_the_analytic_model_reads_the_models_own_sizes():
    q = general_qmodel("mixed")
    plan = resolve(get_builtin("full", "tiny"), q.spec)
    memory = analytic_extra_bytes(plan, q.spec, qmodel=q)
    rows = {row["name"]: row for row in memory["per_conv"]}
    first = rows["first_conv"]  # 5x3, strides (2, 1): 20x28 -> 10x28, one input channel (the plan keeps 3)
    assert first["bias_masks"] == math.ceil(8 * 10 * 28 / 8) and first["weight_inputs"] == 1 * 20 * 28
    assert first["weights"] == 8 * 1 * 5 * 3
    dw = rows["blocks.1.depthwise"]  # 5x5 depthwise, strides (1, 2): 10x28 -> 10x14
    assert dw["bias_masks"] == math.ceil(16 * 10 * 14 / 8) and dw["weight_inputs"] == 16 * 10 * 28
    assert dw["weights"] == 16 * 25
    assert rows["blocks.1.pointwise2"]["weights"] == 8 * 16 * 7
    assert memory["total_bytes"] != analytic_extra_bytes(plan, q.spec, 20)["total_bytes"]
    assert memory["total_bytes"] == sum(memory["parts"].values())
    assert np.isclose(memory["total_kb"], memory["total_bytes"] / 1024)

"""``sparse.table``: the conv tables of a zoo network and of an imported graph answer alike.

A graph scheme the table writes is exactly the plan ``finetune --scheme FILE`` reads back
(``builtin.graph_plan``), for any scheme (property test); the errors name what is wrong; the zoo
table is ``sparse.scheme``'s functions; the analytic model reads a graph's convs from their tensors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.models.zoo import get_spec
from mcutrain.sparse import ALLOWED_RATIOS, Scheme, SchemeError, get_builtin, resolve
from mcutrain.sparse.analytic import graph_conv_sizes, graph_extra_bytes
from mcutrain.sparse.builtin import graph_plan
from mcutrain.sparse.table import GraphConvs, ZooConvs, as_table, save_table_scheme
from tests.quant.graph_models import resnet

GRAPH = resnet()
N = len(GRAPH.convs())


@st.composite
def schemes(draw):
    bias = draw(st.sets(st.integers(0, N - 1)))
    weights = {i: draw(st.sampled_from(ALLOWED_RATIOS)) for i in sorted(bias) if draw(st.booleans())}
    return Scheme("graph", draw(st.sampled_from(["a", "searched-200KB"])), tuple(sorted(bias)),
                  tuple(weights.items()))


@settings(max_examples=25, deadline=None)
@given(scheme=schemes())
def test_a_written_graph_scheme_is_the_plan_finetune_reads(tmp_path_factory, scheme):
    table = GraphConvs(GRAPH)
    path = tmp_path_factory.mktemp("s") / "scheme.json"
    save_table_scheme(path, scheme, table)
    assert graph_plan(GRAPH, str(path)) == table.resolve(scheme)
    doc = json.loads(path.read_text())
    assert doc["model"] == "graph" and doc == table.to_json(scheme)
    plan = table.resolve(scheme)
    assert {c.index for c in plan.convs if c.bias} == set(scheme.bias_layers)
    for i, r in scheme.weight_ratios:  # the first floor(C * r) channels, at least one
        assert plan.convs[i].kept_channels == max(1, int(plan.convs[i].channels * r))


def test_errors_name_the_problem():
    table = GraphConvs(GRAPH)
    with pytest.raises(SchemeError, match="a scheme for an imported graph has \"model\": \"graph\""):
        table.resolve(Scheme("mcunet-5fps", "x", (N - 1,), ()))
    with pytest.raises(SchemeError, match="updates its weight but not its bias"):
        table.resolve(Scheme("graph", "x", (N - 1,), ((0, 1.0),)))
    with pytest.raises(SchemeError, match=f"is not a conv of this graph; use an index 0..{N - 1}"):
        table.index(N, "--layers")
    assert table.index(table.names[2], "--layers") == 2 and len(table.names) == N


def test_the_zoo_table_is_the_scheme_module():
    spec = get_spec("tiny")
    table = as_table(spec)
    assert isinstance(table, ZooConvs) and table.model == "tiny"
    scheme = get_builtin("last-k:2", spec)
    assert table.resolve(scheme) == resolve(scheme, spec)
    assert table.index("first_conv", "--layers") == 0


def test_analytic_sizes_come_from_each_convs_tensors():
    sizes = graph_conv_sizes(GRAPH)
    short = sizes[3]  # the 1x1 stride-2 shortcut reads the ADD's output (8 x 11 x 13), not conv 2's
    assert (short.kernel_hw, short.in_ch, short.in_hw, short.out_ch, short.out_hw) == ((1, 1), 8, (11, 13), 12,
                                                                                         (6, 7))
    plan = GraphConvs(GRAPH).resolve(Scheme("graph", "x", (3,), ((3, 0.25),)))
    figures = graph_extra_bytes(plan, GRAPH)
    flat = 12 * 3 * 3  # the classifier reads the flattened 12 x 3 x 3 pool output
    assert figures["parts"] == {"classifier_input": flat, "bias_masks": -(-12 * 6 * 7 // 8), "biases": 48,
                                "weight_inputs": 2 * 11 * 13, "weights": 12 * 2}
    assert figures["resolution"] == [11, 13] and figures["model"] == "graph"

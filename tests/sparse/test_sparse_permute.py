"""Channel permutation for a sparse-update plan: same logits bit for bit, important channels first."""

import json
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import ALLOWED_RATIOS, Scheme, SchemeError, get_builtin, resolve
from mcutrain.sparse.permute import channel_groups, channel_importance, permute_for_plan
from tests.helpers import int8_numpy
from tests.helpers.models import int8_input, quantized

torch.set_num_threads(1)
RES = 32
PAPER = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


@lru_cache(maxsize=None)
def model(name: str):
    return quantized(name, RES)[0]


@lru_cache(maxsize=None)
def reference_logits(name: str) -> np.ndarray:
    return int8_numpy.forward(model(name), int8_input(2, RES))[0]


def plan_of(name: str, scheme: str | Scheme):
    q = model(name)
    scheme = get_builtin(scheme, name) if isinstance(scheme, str) else scheme
    return resolve(scheme, q.spec)


def every_conv_at(name: str, ratio: float) -> Scheme:
    """Every backbone weight at ``ratio``: every group gets a partial reader."""
    n = len(model(name).convs())
    return Scheme(name, f"all-{ratio}", tuple(range(n)), tuple((i, ratio) for i in range(n)))


def sim_logits(q, x: np.ndarray) -> np.ndarray:
    net = Int8Net(q)
    with torch.no_grad():
        return net.classifier(net.features(torch.from_numpy(x.astype(np.float32)))).numpy()


def assert_sole_readers_lead(q, plan, permuted) -> int:
    """For each partially updated conv that is the only partial reader of its (movable) group, its
    first kept channels carry the largest possible importance; returns how many convs were checked."""
    partial = {u.index: u.kept_channels for u in plan.convs if u.updates_weight and u.kept_channels < u.channels}
    checked = 0
    for group in channel_groups(q):
        readers = [i for i in group.convs_in if i in partial]
        if group.fixed or len(readers) != 1:
            continue
        i = readers[0]
        k = partial[i]
        before = np.sort(channel_importance(q.convs()[i]))[::-1]
        after = channel_importance(permuted.convs()[i])
        assert np.isclose(after[:k].sum(), before[:k].sum(), rtol=1e-12, atol=0), q.convs()[i].name
        assert np.all(np.diff(after) <= 1e-15), "a sole reader's channels are in descending importance"
        checked += 1
    return checked


# ----------------------------------------------------------------------------------------------
# Groups


def test_tiny_groups_follow_the_residual_stream_through_a_block_without_expand():
    q = model("tiny")
    names = [c.name for c in q.convs()]
    groups = {tuple(names[i] for i in g.convs_out): g for g in channel_groups(q)}
    # tiny block 0 has no pointwise1 but a residual add: first_conv, its depthwise and pointwise2 share one stream
    stream0 = groups[("first_conv", "blocks.0.depthwise", "blocks.0.pointwise2")]
    assert [names[i] for i in stream0.convs_in] == ["blocks.0.depthwise", "blocks.0.pointwise2", "blocks.1.pointwise1"]
    mid1 = groups[("blocks.1.pointwise1", "blocks.1.depthwise")]
    assert [names[i] for i in mid1.convs_in] == ["blocks.1.depthwise", "blocks.1.pointwise2"]
    last = groups[("blocks.3.pointwise2", "blocks.4.pointwise2")]
    assert last.classifier and [names[i] for i in last.convs_in] == ["blocks.4.pointwise1"]
    image = [g for g in channel_groups(q) if g.fixed]
    assert len(image) == 1 and image[0].convs_in == (0,) and image[0].channels == 3
    # every conv output and input lies in exactly one group
    n = len(names)
    assert sorted(i for g in channel_groups(q) for i in g.convs_out) == list(range(n))
    assert sorted(i for g in channel_groups(q) for i in g.convs_in) == list(range(n))


def test_mcunet_blocks_11_to_13_pointwise1_read_one_stream():
    q = model("mcunet-5fps")
    (group,) = [g for g in channel_groups(q) if 33 in g.convs_in]
    assert {33, 36, 39} <= set(group.convs_in) and group.channels == 96
    assert [q.convs()[i].name for i in group.convs_out] == [
        "blocks.10.pointwise2", "blocks.11.pointwise2", "blocks.12.pointwise2"]


# ----------------------------------------------------------------------------------------------
# Bit-identical logits


CASES = [("tiny", s) for s in ("full", "last-k:6", 0.5, 0.125)] + [
    (n, s) for n in PAPER for s in ("full", "last-k:6", "paper-99kb", 0.25)]


@pytest.mark.parametrize("name, scheme", CASES)
def test_permuted_model_has_bit_identical_logits(name, scheme):
    q = model(name)
    plan = plan_of(name, every_conv_at(name, scheme) if isinstance(scheme, float) else scheme)
    permuted, record = permute_for_plan(q, plan)
    json.dumps(record)  # JSON-able provenance
    if isinstance(scheme, float) or scheme.startswith("paper"):
        assert record["groups"], "partial updates on random weights must move channels"
    x = int8_input(2, RES)
    logits, acts = int8_numpy.forward(permuted, x)
    assert np.array_equal(logits, reference_logits(name))
    assert np.array_equal(sim_logits(permuted, x), sim_logits(q, x))
    # the pooled features are the same numbers, in the classifier group's new order
    orders = [g["order"] for g in record["groups"] if "classifier" in g["convs_in"]]
    pool_before = int8_numpy.forward(q, x)[1]["pool"]
    assert np.array_equal(acts["pool"], pool_before[:, orders[0]] if orders else pool_before)
    assert_sole_readers_lead(q, plan, permuted)
    # the input model is untouched and the new arrays are not views of the old ones
    for a, b in zip(q.convs(), permuted.convs()):
        if a is not b:
            assert not np.shares_memory(a.weight, b.weight)


def test_record_orders_are_what_was_applied():
    q = model("mcunet-5fps")
    permuted, record = permute_for_plan(q, plan_of("mcunet-5fps", "paper-99kb"))
    old = {c.name: c for c in q.convs()}
    new = {c.name: c for c in permuted.convs()}
    for g in record["groups"]:
        order = np.array(g["order"])
        assert sorted(g["order"]) == list(range(len(order)))
        for name in g["convs_out"]:
            assert np.array_equal(new[name].bias, old[name].bias[order])
            assert np.array_equal(new[name].w_scale, old[name].w_scale[order])
        for name in g["convs_in"]:
            if name == "classifier":
                assert np.array_equal(permuted.classifier.weight, q.classifier.weight[:, order])
            elif not old[name].depthwise:
                rows = np.array(next((h["order"] for h in record["groups"] if name in h["convs_out"]),
                                     range(old[name].out_ch)))
                assert np.array_equal(new[name].weight, old[name].weight[rows][:, order])


def test_a_stream_read_by_several_updated_convs_is_ordered_by_their_summed_importance():
    # paper-99kb updates conv 36 (1/8) and conv 39 (1/4): both read the 96-channel stream
    q = model("mcunet-5fps")
    plan = plan_of("mcunet-5fps", "paper-99kb")
    assert plan.convs[36].kept_channels == 12 and plan.convs[39].kept_channels == 24
    permuted, record = permute_for_plan(q, plan)
    (g,) = [g for g in record["groups"] if "blocks.12.pointwise1" in g["convs_in"]]
    assert {"blocks.11.pointwise1", "blocks.12.pointwise1", "blocks.13.pointwise1"} <= set(g["convs_in"])
    summed = channel_importance(permuted.convs()[36]) + channel_importance(permuted.convs()[39])
    assert np.all(np.diff(summed) <= 1e-15)
    before = channel_importance(q.convs()[36]) + channel_importance(q.convs()[39])
    assert np.isclose(summed[:12].sum(), np.sort(before)[::-1][:12].sum(), rtol=1e-12)


def test_a_sole_updated_reader_gets_its_most_important_channels_first():
    # conv 2 (b0.pw2, stream 0), 4 (b1.dw, mid 1), 9 (b3.pw1, stream 1), 12 (b4.pw1, stream 2),
    # 13 (b4.dw, mid 4): each is the only partial reader of its group
    q = model("tiny")
    scheme = Scheme("tiny", "sole", (2, 4, 9, 12, 13), ((2, 0.5), (4, 0.25), (9, 0.5), (12, 0.5), (13, 0.125)))
    plan = resolve(scheme, q.spec)
    permuted, record = permute_for_plan(q, plan)
    assert len(record["groups"]) == 5
    assert assert_sole_readers_lead(q, plan, permuted) == 5
    # and the kept channels beat the first k of the original order (random weights are not sorted)
    gains = [channel_importance(permuted.convs()[i])[:plan.convs[i].kept_channels].sum()
             - channel_importance(q.convs()[i])[:plan.convs[i].kept_channels].sum() for i in (2, 4, 9, 12, 13)]
    assert min(gains) >= 0 and max(gains) > 0


# ----------------------------------------------------------------------------------------------
# Identity cases


@pytest.mark.parametrize("name", ["tiny", "mcunet-5fps"])
@pytest.mark.parametrize("scheme", ["last-layer", "bias-only", "full", "last-k:6"])
def test_plans_without_partial_weight_updates_change_nothing(name, scheme):
    # ratio-1 readers update every channel: order does not matter to them, so nothing moves
    q = model(name)
    permuted, record = permute_for_plan(q, plan_of(name, scheme))
    assert record["groups"] == []
    assert permuted is q
    for a, b in zip(q.convs(), permuted.convs()):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)


def test_permuting_twice_changes_nothing_the_second_time():
    q = model("tiny")
    plan = plan_of("tiny", every_conv_at("tiny", 0.25))
    once, record = permute_for_plan(q, plan)
    assert record["groups"]
    twice, record2 = permute_for_plan(once, plan)
    assert record2["groups"] == [] and twice is once


def test_a_partial_first_conv_update_is_reported_unpermuted():
    q = model("tiny")
    scheme = Scheme("tiny", "first", (0,), ((0, 0.5),))
    permuted, record = permute_for_plan(q, resolve(scheme, q.spec))
    assert permuted is q and record["unpermuted"] == ["first_conv"]


def test_a_plan_for_another_model_is_refused():
    with pytest.raises(SchemeError, match="mcunet-5fps"):
        permute_for_plan(model("tiny"), plan_of("mcunet-5fps", "paper-99kb"))


# ----------------------------------------------------------------------------------------------
# Frozen channels


def _row_key(conv, c):
    return (int(conv.bias[c]), float(conv.w_scale[c]), tuple(np.sort(conv.weight[c].ravel())))


def test_frozen_channels_follow_their_channel():
    q = model("tiny")
    convs = {c.name: c for c in q.convs()}
    dw = convs["blocks.1.depthwise"]
    dw_weight = dw.weight.copy()
    dw_weight[3] = 0  # a degenerate channel: no importance, it must go last
    frozen = {"blocks.1.pointwise1": (2, 5), "blocks.1.depthwise": (3,), "blocks.3.pointwise2": (0, 1, 7),
              "first_conv": (1,)}
    changed = {name: replace(convs[name], frozen_channels=ch) for name, ch in frozen.items()}
    changed["blocks.1.depthwise"] = replace(changed["blocks.1.depthwise"], weight=dw_weight)
    blocks = tuple(replace(b, **{k: changed.get(getattr(b, k).name, getattr(b, k))
                                 for k in ("pointwise1", "depthwise", "pointwise2") if getattr(b, k) is not None})
                   for b in q.blocks)
    q = replace(q, first_conv=changed["first_conv"], blocks=blocks)
    scheme = Scheme("tiny", "frozen", (2, 4, 9, 12, 13), ((2, 0.5), (4, 0.25), (9, 0.5), (12, 0.5), (13, 0.125)))
    plan = resolve(scheme, q.spec)
    permuted, record = permute_for_plan(q, plan)
    moved = 0
    for old, new in zip(q.convs(), permuted.convs()):
        # the same rows (bias, scale, weights up to the input order) are frozen, wherever they went
        assert sorted(_row_key(new, c) for c in new.frozen_channels) == \
            sorted(_row_key(old, c) for c in old.frozen_channels), old.name
        assert list(new.frozen_channels) == sorted(set(new.frozen_channels))
        moved += new.frozen_channels != old.frozen_channels
    assert moved >= 3, "the test must move frozen channels"
    assert assert_sole_readers_lead(q, plan, permuted) == 5
    assert permuted.convs()[4].frozen_channels == (15,)  # the zero depthwise channel sorts last
    x = int8_input(2, RES)
    assert np.array_equal(int8_numpy.forward(permuted, x)[0], int8_numpy.forward(q, x)[0])


# ----------------------------------------------------------------------------------------------
# Property: any plan of tiny


@st.composite
def tiny_plans(draw):
    n = len(model("tiny").convs())
    layers = draw(st.lists(st.integers(0, n - 1), unique=True, min_size=1, max_size=n))
    ratios = tuple((i, draw(st.sampled_from(ALLOWED_RATIOS))) for i in layers)
    return resolve(Scheme("tiny", "random", tuple(layers), ratios), model("tiny").spec)


@settings(max_examples=40, deadline=None)
@given(tiny_plans())
def test_any_tiny_plan_gives_bit_identical_logits_and_puts_important_channels_first(plan):
    q = model("tiny")
    permuted, record = permute_for_plan(q, plan)
    json.dumps(record)
    assert np.array_equal(int8_numpy.forward(permuted, int8_input(2, RES))[0], reference_logits("tiny"))
    assert_sole_readers_lead(q, plan, permuted)

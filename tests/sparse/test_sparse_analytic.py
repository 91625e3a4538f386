"""The analytic extra-memory model against the paper's scheme names and against hand counts."""

import math

import pytest

from mcutrain.models import get_spec, model_summary
from mcutrain.sparse import Scheme, SchemeError, analytic_extra_bytes, builtin_names, get_builtin, resolve

PAPER = [(m, n) for m in ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
         for n in builtin_names(m) if n.startswith("paper-")]


def extra(model, name, resolution=128):
    spec = get_spec(model)
    return analytic_extra_bytes(resolve(get_builtin(name, model), spec), spec, resolution)


def name_kb(name: str) -> int:
    return int(name.removeprefix("paper-").removesuffix("kb"))


@pytest.mark.parametrize("model, name", PAPER)
def test_paper_name_is_the_floor_of_our_figure_in_kib(model, name):
    """Found, not assumed: all 15 names equal floor(total / 1024) at 128x128 (within 0 to 1 KB below)."""
    result = extra(model, name)
    assert math.floor(result["total_bytes"] / 1024) == name_kb(name)
    assert result["total_kb"] == result["total_bytes"] / 1024


def test_kb_as_1000_bytes_would_not_match_the_names():
    assert any(math.floor(extra(m, n)["total_bytes"] / 1000) != name_kb(n) for m, n in PAPER)


def test_known_figure_mcunet_99kb():
    result = extra("mcunet-5fps", "paper-99kb")
    assert result["total_bytes"] == 102_240
    assert result["parts"] == {"classifier_input": 160, "bias_masks": 18_080, "biases": 19_168,
                               "weight_inputs": 12_352, "weights": 52_480}


@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3", "tiny"])
def test_full_update_counts_every_weight_and_bias_once(model):
    spec = get_spec(model)
    summary = model_summary(model, 128)
    result = extra(model, "full")
    assert result["parts"]["weights"] == summary["backbone_weights"]
    assert result["parts"]["biases"] == 4 * summary["biases"]
    assert result["total_bytes"] == sum(result["parts"].values())
    assert sum(row["weights"] for row in result["per_conv"]) == summary["backbone_weights"]
    assert len(result["per_conv"]) == summary["convs"] and result["parts"]["classifier_input"] == spec.feature_ch


def test_classifier_only_costs_its_input_activation():
    result = extra("mbv2-w0.35", "last-layer")
    assert result["total_bytes"] == 112 and result["per_conv"] == []


def test_hand_count_on_tiny():
    """tiny at 32x32: conv 12 = blocks.4.pointwise1 (16 -> 32, 1x1, side 4), conv 13 = its depthwise
    (32 ch, 3x3, side 4)."""
    spec = get_spec("tiny")
    plan = resolve(Scheme("tiny", "h", (12, 13), ((12, 0.5), (13, 0.25))), spec)
    result = analytic_extra_bytes(plan, spec, 32)
    pw1 = {"bias_masks": 32 * 16 // 8, "biases": 32 * 4, "weight_inputs": 8 * 16, "weights": 32 * 8}
    dw = {"bias_masks": 32 * 16 // 8, "biases": 32 * 4, "weight_inputs": 8 * 16, "weights": 8 * 9}
    assert result["per_conv"] == [{"index": 12, "name": "blocks.4.pointwise1", **pw1},
                                  {"index": 13, "name": "blocks.4.depthwise", **dw}]
    assert result["total_bytes"] == 16 + sum(pw1.values()) + sum(dw.values())


def test_memory_grows_with_resolution_and_with_the_scheme_name_per_model():
    for model in ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"):
        names = [n for m, n in PAPER if m == model]
        totals = [extra(model, n)["total_bytes"] for n in names]
        assert totals == sorted(totals)
        assert extra(model, names[0], 160)["total_bytes"] > totals[0]


def test_refuses_foreign_plan_and_bad_resolution():
    spec = get_spec("tiny")
    plan = resolve(get_builtin("full", "tiny"), spec)
    with pytest.raises(SchemeError, match="plan is for model 'tiny', not 'mcunet-5fps'"):
        analytic_extra_bytes(plan, get_spec("mcunet-5fps"))
    with pytest.raises(SchemeError, match="resolution must be a positive integer"):
        analytic_extra_bytes(plan, spec, 0)

"""batch1_check: the engine's batch-1 step in the simulation, measured per trained weight (issue 13)."""

import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from mcutrain.data import load_dataset
from mcutrain.sparse.builtin import graph_plan
from mcutrain.sparse.scheme import Scheme
from mcutrain.train.batch1_check import (MAX_LSB_PER_STEP, batch1_check, scheme_without_weights,
                                          without_weights)

torch.set_num_threads(1)


@lru_cache(maxsize=None)
def _resnet_like():
    from tests.helpers.trainable_graphs import ResNetLike, trainable_model

    data = load_dataset("digits")
    return trainable_model(ResNetLike, data), data


def test_a_small_rate_moves_no_weight_by_a_whole_lsb_per_step():
    model, data = _resnet_like()
    plan = graph_plan(model.graph, "full")
    check = batch1_check(model, plan, data, lr=1e-4, steps=20, eval_n=50)
    n = len(model.graph.convs())
    assert [w.conv for w in check.weights] == list(range(n + 1))  # every conv's weight and the classifier
    assert check.unstable() == ()
    assert all(0 <= w.lsb_per_step < MAX_LSB_PER_STEP for w in check.weights)
    assert check.steps == 20 and 0 <= check.accuracy <= 1 and check.chance > 0.1


def test_a_huge_rate_is_flagged_and_saturates_the_weights():
    model, data = _resnet_like()
    plan = graph_plan(model.graph, "full")
    check = batch1_check(model, plan, data, lr=100.0, steps=20, eval_n=50)
    assert check.unstable()  # some conv moves by more than MAX_LSB_PER_STEP per sample
    flagged = [w for w in check.weights if w.conv in check.unstable()]
    assert all(w.lsb_per_step > MAX_LSB_PER_STEP for w in flagged)
    assert any(w.saturated_after > w.saturated_before for w in flagged)
    assert check.unstable(max_lsb_per_step=1e9) == ()
    assert "unstable weights: conv" in check.summary()


def test_the_check_is_seeded():
    model, data = _resnet_like()
    plan = graph_plan(model.graph, "last-k:2")
    a, b = (batch1_check(model, plan, data, lr=0.05, steps=10, eval_n=30) for _ in range(2))
    assert a == b


def test_without_weights_freezes_only_those_weights():
    model, _ = _resnet_like()
    plan = graph_plan(model.graph, "full")
    kept = without_weights(plan, [0, 2])
    assert [c.updates_weight for c in kept.convs] == [c.index not in (0, 2) for c in plan.convs]
    assert [c.bias for c in kept.convs] == [c.bias for c in plan.convs]
    assert kept.convs[0].kept_channels == 0 and "without weights of conv 0, 2" in kept.scheme
    assert without_weights(plan, []) == plan


def test_scheme_without_weights_keeps_the_biases_and_says_why():
    scheme = Scheme("graph", "searched", (0, 1, 2), ((0, 1.0), (2, 0.25)), "searched (evolution)")
    kept = scheme_without_weights(scheme, [0])
    assert kept.weight_ratios == ((2, 0.25),) and kept.bias_layers == (0, 1, 2)
    assert kept.description.startswith("searched (evolution); weights of conv 0 dropped")
    assert scheme_without_weights(scheme, ()) is scheme


def test_resnet8_first_conv_weights_are_the_unstable_ones():
    """The MLPerf Tiny ResNet-8 takes raw pixels (input scale 1): at the rate that trains last-k:3,
    conv 0's weights move several LSB per sample, the other trained weights a fraction of one."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quant"))
    import graph_models as gm

    from mcutrain.quant.import_tflite import import_tflite
    from mcutrain.sparse.builtin import _graph_resolved

    data = load_dataset("digits")
    model = import_tflite(gm.shared_model("pretrainedResnet_quant"), classes=tuple(data.classes), new_head=True)
    n = len(model.graph.convs())
    plan = _graph_resolved(model.graph, "bias-all+w0,3,4,6", set(range(n)), {0: 1.0, 3: 0.25, 4: 1.0, 6: 1.0})
    check = batch1_check(model, plan, data, lr=0.01, steps=40, eval_n=30)
    assert check.unstable() == (0,)
    steps = {w.conv: w.lsb_per_step for w in check.weights}
    assert steps[0] > 10 * max(v for k, v in steps.items() if k != 0)

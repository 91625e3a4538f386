"""The one judgement of whether a run learned (mcutrain.train.health): each rule, its edges, its numbers."""

import json
import math

import pytest

from mcutrain.train.health import RISE_FACTOR, Z, chance_bound, judge

NAN, INF = float("nan"), float("inf")
LOG10 = math.log(10)


def test_a_run_that_learned_is_ok_with_its_numbers():
    h = judge([2.0, 1.2, 0.8, 0.5, 0.4], 10, val_accuracy=0.8, val_n=269)
    assert h.ok and h.reason == "learned"
    assert (h.classes, h.steps, h.first_loss, h.final_loss) == (10, 5, 2.0, 0.4)  # fifths of 5 entries: 1 each
    assert h.chance_loss == pytest.approx(LOG10) and h.val_accuracy == 0.8 and h.val_n == 269
    assert h.val_bound == pytest.approx(0.1 + Z * math.sqrt(0.09 / 269))


def test_head_and_tail_are_the_first_and_last_fifth():
    h = judge([3.0] * 5 + [1.0] * 10 + [0.5] * 5, 10)  # 20 entries: 4 each
    assert h.first_loss == 3.0 and h.final_loss == 0.5


def test_loss_that_stays_at_or_above_chance_fails():
    h = judge([2.4, 2.35, 2.31], 10, val_accuracy=0.6, val_n=500)  # accuracy fine, loss is not
    assert not h.ok and "not below chance level log 10 = 2.303" in h.reason
    exactly = judge([LOG10, LOG10], 10)  # a zero head that never moved: at chance counts
    assert not exactly.ok
    assert judge([LOG10, LOG10 - 1e-3], 10).ok  # just below it: learned something


def test_the_issue_runs_fail():
    """Issue 12: int8 at lr 1e6 ended at loss 47,443 and 10%; the C engine at 118,419 and 7%."""
    int8 = judge([873.0, 47443.0], 10, val_accuracy=0.10, val_n=269)
    engine = judge([0.9] * 40 + [118419.0] * 160, 10, val_accuracy=0.07, val_n=100, unit="step")
    assert not int8.ok and not engine.ok
    assert "rose from 0.9 to 1.184e+05" in engine.reason


def test_rise_far_above_the_start_fails_below_chance_too():
    # 100 classes: log K = 4.6; 0.5 -> 3.0 is six times the start, still below chance
    h = judge([0.5, 1.0, 2.0, 3.0, 3.0], 100)
    assert not h.ok and h.reason.startswith(f"the training loss rose from 0.5 to 3 (over {RISE_FACTOR:g}x")
    # a rise of tiny losses stays below half of log K: not a failure
    assert judge([0.01, 0.02, 0.04, 0.05, 0.05], 100).ok
    # just under the factor: not a failure
    assert judge([1.0, 2.9], 100).ok


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_a_loss_that_ends_non_finite_fails(bad):
    h = judge([1.0, 0.5, bad], 10, val_accuracy=0.9, val_n=100)
    assert not h.ok and h.reason == f"the training loss became {bad} (epoch 3 of 3)"
    assert h.final_loss is not None and not math.isfinite(h.final_loss)
    d = h.to_dict()
    assert d["failed"] is True and d["final_loss"] is None  # strict JSON: the reason names the value
    json.dumps(d, allow_nan=False)


def test_a_non_finite_loss_the_run_recovered_from_is_not_a_failure():
    """The engine's guard rolls back after a blow-up: the run is judged by where it ends."""
    losses = [2.0] * 10 + [INF] + [1.0] * 20 + [0.5] * 9
    h = judge(losses, 10, val_accuracy=0.7, val_n=100, unit="step")
    assert h.ok
    # ... but an infinity in the tail is the end of the run
    assert not judge([2.0] * 10 + [1.0] * 8 + [INF, 0.5], 10, unit="step").ok


def test_parameters_not_finite_fail_whatever_the_loss():
    h = judge([2.0, 0.1], 10, val_accuracy=0.9, val_n=100, parameters_finite=False)
    assert not h.ok and "parameters are not finite" in h.reason
    assert not judge([], 10, parameters_finite=False).ok


@pytest.mark.parametrize("losses", [[], ()])
def test_no_training_is_not_judged(losses):
    """epochs=0 / steps=0: nothing was trained, so nothing failed (even at chance accuracy)."""
    h = judge(losses, 10, val_accuracy=0.1, val_n=1000)
    assert h.ok and h.steps == 0 and h.first_loss is None and h.final_loss is None and h.val_bound is None
    assert h.cause == "too-short" and h.reason == "not judged: nothing was trained"


def test_validation_accuracy_at_chance_fails():
    h = judge([2.0, 1.0], 10, val_accuracy=0.1, val_n=269)
    assert not h.ok and h.reason.startswith("validation accuracy 10.00% is at chance")
    assert "269 samples" in h.reason
    assert judge([2.0, 1.0], 10, val_accuracy=0.14, val_n=269).ok  # above the bound (13.0%)
    assert judge([2.0, 1.0], 10, val_accuracy=0.1).ok  # no validation accuracy: loss rules only


def test_two_classes_with_30_validation_samples():
    """The bound for 2 classes on 30 samples is 65.0%: 19/30 is chance, 20/30 is not."""
    assert chance_bound(2, 30) == pytest.approx(0.5 + Z * math.sqrt(0.25 / 30))
    assert not judge([0.69, 0.5], 2, val_accuracy=19 / 30, val_n=30).ok
    assert judge([0.69, 0.5], 2, val_accuracy=20 / 30, val_n=30).ok


@pytest.mark.parametrize("classes, n, judged", [(2, 10, False), (2, 11, True), (10, 1, False), (10, 3, True),
                                                (2, 0, False), (2, None, False)])
def test_too_few_validation_samples_are_not_judged(classes, n, judged):
    """Where even the chance bound lies above halfway to perfect, the accuracy says nothing."""
    assert (chance_bound(classes, n) is not None) == judged
    h = judge([1.0, 0.5], classes, val_accuracy=0.0, val_n=n)
    assert h.ok != judged  # accuracy 0 fails only where it is judged


def test_fewer_than_two_classes_is_a_bug():
    with pytest.raises(ValueError, match="at least 2 classes"):
        judge([1.0], 1)


def test_the_step_unit_names_where_the_loss_went_wrong():
    assert judge([1.0, NAN], 2, unit="step").reason == "the training loss became nan (step 2 of 2)"


def test_a_run_of_few_updates_is_judged_on_finiteness_only():
    """Each loss is measured before its update: 1 batch-1 step of a zero head is log K, and one
    sample of one class cannot lift a 10-class accuracy off chance."""
    short = judge([LOG10], 10, val_accuracy=0.1, val_n=100, unit="step")
    assert short.ok and short.cause == "too-short" and short.updates == 1
    assert short.reason == "not judged: 1 update(s) are too few to expect learning (under 10)"
    assert judge([LOG10] * 9, 10, val_accuracy=0.1, val_n=100, unit="step").ok
    assert not judge([LOG10] * 10, 10, unit="step").ok  # from MIN_UPDATES on, the level counts
    assert not judge([1.0] * 10, 10, val_accuracy=0.1, val_n=100, unit="step").ok  # and the accuracy
    assert not judge([1.0, NAN], 10, unit="step").ok  # finiteness always
    assert not judge([1.0], 10, unit="step", parameters_finite=False).ok


def test_an_epoch_history_is_judged_by_the_updates_behind_it():
    """One epoch of one batch (a tiny dataset) is one update; one epoch of many is a judged run."""
    assert judge([math.log(3)], 3, val_accuracy=1 / 3, val_n=6, updates=1).cause == "too-short"
    assert not judge([LOG10], 10, updates=40).ok
    assert not judge([LOG10], 10).ok  # updates unknown: judged
    assert judge([LOG10], 10).updates is None


def test_the_advice_says_lower_only_when_the_loss_blew_up():
    assert judge([0.5, 47443.0], 10).lr_advice(1e6) == "lower --lr (now 1e+06)"
    assert judge([1.0, NAN], 10).lr_advice(0.1, "compile --lr").startswith("lower compile --lr (now 0.1)")
    assert judge([2.0, 5.0], 10).lr_advice(0.1).startswith("lower --lr")  # above 2 log K: blew up
    at_chance = judge([2.31, 2.31], 10)
    assert at_chance.cause == "chance-loss" and at_chance.lr_advice(1e-6).startswith("try another --lr (now 1e-06")
    assert judge([2.0, 1.0], 10, val_accuracy=0.1, val_n=500).lr_advice(0.05).startswith("try another --lr")

"""The analysis judges each of its runs with train.health: failed runs are recorded (run -> why), not noise."""

import math

from mcutrain.search.contrib import run_failures
from mcutrain.search.runs import RunSpec


def _record(losses, acc, diverged=False):
    return {"val_accuracy": acc, "train_loss_per_epoch": losses, "diverged": diverged, "seconds": 0.1,
            "train_seconds": 0.1, "prefix_cached_blocks": 0}


def test_each_failed_run_is_named_with_its_reason_in_run_order():
    results = {RunSpec(0): _record([1.5, 0.9], 0.8),                         # learned
               RunSpec(1): _record([873.0, 654.0], 0.1),                     # loss far above log 10
               RunSpec(2): _record([1.2, math.nan], 0.1, diverged=True),     # diverged
               RunSpec(2, 13, 1.0): _record([1.2, 0.8], 0.1),                # fine loss, accuracy at chance
               RunSpec(2, 14, 0.125): _record([1.2, 0.8], 0.1, diverged=True)}  # parameters went non-finite
    failed = run_failures(results, 10, 269)
    assert list(failed) == ["b1", "b2", "w13@1+b2", "w14@0.125+b2"]
    assert "not below chance level log 10" in failed["b1"]
    assert failed["b2"] == "the training loss became nan (epoch 2 of 2)"
    assert failed["w13@1+b2"].startswith("validation accuracy 10.00% is at chance")
    assert "parameters are not finite" in failed["w14@0.125+b2"]


def test_a_tiny_validation_set_does_not_fail_a_run_on_its_accuracy():
    assert run_failures({RunSpec(0): _record([0.6, 0.4], 0.5)}, 2, 8) == {}


def test_runs_of_too_few_updates_are_not_failed():
    """One epoch of one batch (a tiny training subset) cannot be expected to learn: not judged."""
    at_chance = {RunSpec(0): _record([math.log(10)], 0.1)}
    assert run_failures(at_chance, 10, 269, updates=1) == {}
    assert list(run_failures(at_chance, 10, 269, updates=10)) == ["last-layer"]

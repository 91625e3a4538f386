"""`mcutrain run` judges the C engine's training (issue 12: lr 1e6 gave loss 118,419 and 51% -> 7%, no
warning): a run that did not learn exits 3 with one line saying why; the on-device guard's rollbacks are
printed, and a run that rolled back and ended healthy has not failed."""

from __future__ import annotations

import json

import pytest

import mcutrain.codegen.runner as runner
from mcutrain.cli import cmd_compile
from mcutrain.cli.cmd_run import _human, run_health
from mcutrain.cli.main import main
from tests.helpers.cli import run_command
from tests.helpers.digits_model import make_fresh_head_digits_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Host builds of the digits model (fresh head) at a sane and at a huge learning rate."""
    root = tmp_path_factory.mktemp("digits")
    path = make_fresh_head_digits_model(root)
    built = {}
    for name, lr in (("good", "0.05"), ("huge", "1e6")):
        code, _ = run_command(cmd_compile, ["compile", str(path), "--scheme", "last-layer", "--lr", lr,
                                            "--target", "host", "--out", str(root / name), "--json"])
        assert code == 0
        built[name] = root / name
    return built


def _run(folder, capsys) -> tuple[int, dict, str]:
    code = main(["run", str(folder), "--data", "digits", "--steps", "30", "--eval", "20", "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_a_huge_learning_rate_on_the_engine_fails_with_exit_3(folders, capsys):
    code, r, err = _run(folders["huge"], capsys)
    assert code == 3 and r["failed"] is True and r["health"]["failed"] is True
    assert r["health"]["steps"] == 30 and r["health"]["val_n"] == 20
    assert r["health"]["final_loss"] > 2 * r["health"]["chance_loss"]
    last = err.strip().splitlines()[-1]
    assert last.startswith("mcutrain run: error: training on the C engine failed to learn: ")
    assert r["health"]["reason"] in last and "lower --lr (now 1e+06) in `mcutrain compile`" in last


def test_a_sane_learning_rate_on_the_engine_passes(folders, capsys):
    code, r, _ = _run(folders["good"], capsys)
    assert code == 0 and r["failed"] is False and r["health"]["reason"] == "learned"
    assert r["guard"]["rollbacks"] == 0  # a sane rate never trips the on-device guard


def _result(losses, after, guard=None) -> dict:
    r = {"folder": "f", "target": "host", "model": "tiny", "resolution": 16, "scheme": "last-layer",
         "accumulate": "int32", "data": "digits", "losses": losses, "seconds": 1.0,
         "accuracy": {"before": 0.5, "after": after, "n": 100}}
    if guard is not None:
        r["guard"] = guard
    return r


def test_a_run_that_rolled_back_and_ended_healthy_has_not_failed():
    """The blow-up sits in the middle of the losses; the run ends learned: ok, and the rollbacks show."""
    r = _result([2.0] * 10 + [float("inf"), 5e4, 8e4] + [0.6] * 37, 0.8,
                {"rollbacks": 2, "lr_final": 0.0125, "events": []})
    health = run_health(r, 10)
    assert health.ok
    r.update(failed=False, health=health.to_dict())
    text = _human(r)
    assert "rolled back to good parameters 2 time(s), learning rate now 0.0125" in text
    assert "health          learned" in text


def test_no_guard_line_without_rollbacks():
    for guard in (None, {"rollbacks": 0, "lr_final": 0.05, "events": []}):
        r = _result([2.0, 1.0, 0.5], 0.8, guard)
        r.update(failed=False, health=run_health(r, 10).to_dict())
        assert "rolled back" not in _human(r)


def test_eval_0_judges_the_losses_only():
    r = _result([2.0, 1.0, 0.5], None)
    r["accuracy"] = {"before": None, "after": None, "n": 0}
    health = run_health(r, 10)
    assert health.ok and health.val_accuracy is None and health.val_n is None


def test_a_guard_that_could_not_recover_is_named_in_the_failure(folders, capsys, monkeypatch):
    def blown(*_args, **_kw):
        return {"losses": [2.0] * 10 + [9e4] * 20, "accuracy": {"before": 0.5, "after": 0.1, "n": 20},
                "seconds": 0.1, "guard": {"rollbacks": 3, "lr_final": 0.006, "events": []}}

    monkeypatch.setattr(runner, "run_host", blown)
    code, r, err = _run(folders["good"], capsys)
    assert code == 3 and r["failed"] and r["guard"]["rollbacks"] == 3
    assert "its guard rolled back 3 time(s) and could not recover" in err.strip().splitlines()[-1]

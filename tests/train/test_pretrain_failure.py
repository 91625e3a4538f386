"""A pretraining run that does not learn fails (exit 3) and keeps no checkpoint unless ``--keep-failed``;
one that diverges the same; one that learns reports its health."""

import json

from mcutrain.cli.main import main
from mcutrain.train.pretrain import PretrainConfig, pretrain, run_paths


def _pretrain(out, lr: str, *extra: str) -> int:
    return main(["pretrain", "--model", "tiny", "--data", "digits", "--resolution", "16", "--epochs", "1",
                 "--batch-size", "32", "--lr", lr, "--quiet", "--out", str(out), "--json", *extra])


def test_a_run_left_at_chance_fails_and_keeps_no_checkpoint(tmp_path, capsys):
    """lr 1e-6 never moves the loss off log 10: failed, and the advice is another rate, not a lower one."""
    out = tmp_path / "c.safetensors"
    code = _pretrain(out, "1e-6")
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    files = run_paths(str(out))
    assert code == 3 and not files["checkpoint"].exists() and not files["state"].exists()
    assert files["metrics"].exists()  # the record of what the run did stays
    assert r["failed"] and r["checkpoint"] is None and r["health"]["cause"] == "chance-loss"
    assert r["health"]["val_n"] > 0 and r["health"]["steps"] == 1
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("mcutrain pretrain: error: training failed to learn: the training loss ended at ")
    assert "try another --lr (now 1e-06" in err and "--keep-failed keeps it" in err


def test_keep_failed_keeps_the_checkpoint_and_still_exits_3(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    code = _pretrain(out, "1e-6", "--keep-failed")
    r = json.loads(capsys.readouterr().out)
    assert code == 3 and r["failed"] and r["checkpoint"] == str(out)
    assert out.exists() and run_paths(str(out))["state"].exists()


def test_a_diverging_run_exits_3_with_the_advice_to_lower_the_rate(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    code = _pretrain(out, "1e6")
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert code == 3 and r["diverged"] and r["failed"] and not out.exists()
    assert "training diverged in epoch 1/1" in captured.err and "lower --lr (now 1e+06)" in captured.err


def test_a_run_that_learns_reports_its_health(tmp_path):
    cfg = PretrainConfig(model="tiny", data="digits", out=str(tmp_path / "c.safetensors"), epochs=2,
                         batch_size=32, lr=0.05, resolution=16, seed=0)
    summary = pretrain(cfg, progress=False, log=lambda _m: None)
    health = summary["health"]
    assert not summary["failed"] and health["ok"] and health["steps"] == 2
    assert health["final_loss"] < health["first_loss"] < health["chance_loss"] * 1.5
    assert health["val_accuracy"] > health["val_bound"]

"""`mcutrain scheme` through a parser holding only this subcommand (independent of main.py)."""

import argparse
import json

import pytest

from mcutrain.cli import cmd_scheme
from mcutrain.sparse import SchemeError, get_builtin, save_scheme


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mcutrain")
    cmd_scheme.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list_json_has_every_builtin_with_its_analytic_memory(capsys):
    assert run(["scheme", "list", "--model", "mcunet-5fps", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["paper-49kb", "paper-74kb", "paper-99kb", "paper-124kb",
                                         "paper-148kb", "full", "last-layer", "bias-only"]
    r99 = rows[2]
    assert (r99["n_bias"], r99["weight_layers"], r99["ratios"]) == (22, [21, 24, 27, 30, 36, 39],
                                                                    [1, 1, 1, 1, 0.125, 0.25])
    assert r99["analytic_bytes"] == 102_240 and r99["resolution"] == 128


def test_list_text(capsys):
    assert run(["scheme", "list", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "full" in out and "0..14" in out and "all 1" in out and "last-k:N" in out


def test_show_builtin_json_lists_the_trained_convs(capsys):
    assert run(["scheme", "show", "last-k:2", "--model", "tiny", "--resolution", "64", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert (p["scheme"], p["resolution"], p["lowest_trained_conv"], p["classifier"]) == ("last-k:2", 64, 13, True)
    assert [(c["name"], c["bias"], c["weight_ratio"], c["kept_channels"]) for c in p["convs"]] == [
        ("blocks.4.depthwise", True, 1.0, 32), ("blocks.4.pointwise2", True, 1.0, 32)]
    assert p["analytic"]["total_bytes"] == sum(p["analytic"]["parts"].values())


def test_show_text_of_a_paper_scheme(capsys):
    assert run(["scheme", "show", "paper-99kb", "--model", "mcunet-5fps"]) == 0
    out = capsys.readouterr().out
    assert "blocks.7.pointwise1" in out
    assert "12/96" in out and "24/96" in out  # convs 36 and 39 (pointwise1, 96 inputs) at 1/8 and 1/4
    assert "102,240 bytes = 99.84 KB" in out


def test_show_and_check_a_json_file(tmp_path, capsys):
    path = tmp_path / "s.json"
    save_scheme(path, get_builtin("paper-74kb", "proxyless-w0.3"))
    assert run(["scheme", "check", str(path), "--model", "proxyless-w0.3"]) == 0
    assert "ok: scheme 'paper-74kb' for proxyless-w0.3, 28 bias-updated convs, 8 weight-updated" in capsys.readouterr().out
    assert run(["scheme", "show", str(path), "--model", "proxyless-w0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lowest_trained_conv"] == 32


def test_check_refuses_a_bad_file_and_a_wrong_model(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "mcutrain-scheme", "version": 1, "model": "tiny", "name": "b",
                               "bias": {"last": 1}, "weights": [{"layer": 3, "ratio": 1}]}))
    with pytest.raises(SchemeError, match="bad.json: layer 3 .blocks.1.pointwise1. updates its weight"):
        run(["scheme", "check", str(bad), "--model", "tiny"])
    good = tmp_path / "good.json"
    save_scheme(good, get_builtin("bias-only", "tiny"))
    with pytest.raises(SchemeError, match="is for model 'tiny'"):
        run(["scheme", "check", str(good), "--model", "mcunet-5fps"])
    with pytest.raises(SchemeError, match="no such scheme file"):
        run(["scheme", "check", str(tmp_path / "none.json"), "--model", "tiny"])


def test_no_action_prints_help_and_returns_1(capsys):
    assert run(["scheme"]) == 1
    assert "list" in capsys.readouterr().out

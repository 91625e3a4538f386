"""The shared argument types: every command with an --lr refuses NaN, inf, <= 0 and out-of-float32
values before any work, with exit 2 and one line naming the option and the allowed range."""

import argparse
import subprocess

import pytest

from mcutrain.cli.argtypes import learning_rate, learning_rate_or_auto
from mcutrain.cli.main import COMMANDS, build_parser, main

LR_COMMANDS = {  # each command with an --lr and the arguments it requires besides
    "pretrain": ["--model", "tiny", "--data", "digits", "--out", "never.safetensors"],
    "finetune": ["never.mct", "--data", "digits", "--scheme", "bias-only", "--out", "never2.mct"],
    "analyze": ["never.mct", "--data", "digits", "--out", "never.json"],
    "compile": ["tiny", "--scheme", "bias-only"],
    "demo": [],
}
BAD = ["nan", "NaN", "inf", "-inf", "0", "-0.1", "1e39", "1e-50", "abc", ""]


@pytest.mark.parametrize("text", ["0.1", "1e-3", "3", "1e38"])
def test_learning_rate_accepts_finite_positive_float32(text):
    assert learning_rate(text) == float(text)


@pytest.mark.parametrize("text", BAD)
def test_learning_rate_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be (a finite number > 0 \(between|a number)"):
        learning_rate(text)


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser([command])
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]._actions


def test_every_lr_option_in_the_cli_uses_the_shared_type():
    """A command that adds an --lr with a plain float type fails here."""
    with_lr = set()
    for command in COMMANDS:
        for action in _options(command):
            if "--lr" in action.option_strings:
                assert action.type in (learning_rate, learning_rate_or_auto), command
                with_lr.add(command)
    assert with_lr == set(LR_COMMANDS)


@pytest.mark.parametrize("command", sorted(LR_COMMANDS))
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_every_command_refuses_a_bad_lr_with_exit_2(capsys, tmp_path, monkeypatch, command, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([command, *LR_COMMANDS[command], f"--lr={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"mcutrain {command}: error: argument --lr: must be a finite number > 0")
    assert "Traceback" not in "\n".join(err)
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_cli_refuses_nan_in_a_fresh_process(tmp_path):
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-m", "mcutrain.cli.main", "pretrain", "--model", "tiny", "--data",
                             "digits", "--out", str(tmp_path / "c.safetensors"), "--lr", "nan"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "argument --lr: must be a finite number > 0" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())

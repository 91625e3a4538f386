"""The `mcutrain` entry point: every command registers, JSON output parses, errors exit 2 with a message."""

import argparse
import json

import pytest

from mcutrain.cli.main import COMMANDS, build_parser, main


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            build_parser([name, "--help"]).parse_args([name, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "usage: mcutrain " + name in out and "options:" in out


def test_top_level_help_lists_every_command_without_importing_them(capsys):
    import sys

    for name in COMMANDS:
        sys.modules.pop(f"mcutrain.cli.cmd_{name}", None)
    with pytest.raises(SystemExit):
        build_parser(["--help"]).parse_args(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert not any(f"mcutrain.cli.cmd_{name}" in sys.modules for name in COMMANDS)


def test_zoo_json_lists_the_paper_networks_exactly(capsys):
    code, out, _ = _run(capsys, ["zoo", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["mcunet-5fps"]["convs"] == 42 and rows["mbv2-w0.35"]["macs"] == 16_646_912
    assert {"name", "convs", "backbone_weights", "biases", "macs", "resolution"} <= set(rows["tiny"])


def test_zoo_text_is_a_table(capsys):
    code, out, _ = _run(capsys, ["zoo", "--resolution", "64"])
    assert code == 0 and out.splitlines()[0].split()[:3] == ["name", "convs", "backbone_weights"]
    assert "mcunet-5fps" in out


def test_user_errors_exit_2_with_the_message(capsys, tmp_path):
    code, _, err = _run(capsys, ["eval", str(tmp_path / "none.safetensors"), "--data", "digits"])
    assert code == 2 and "no such file" in err
    code, _, err = _run(capsys, ["pretrain", "--model", "nope", "--data", "digits", "--out", str(tmp_path / "x")])
    assert code == 2 and "unknown model 'nope'" in err
    code, _, err = _run(capsys, ["data", "show", f"folder:{tmp_path}/missing"])
    assert code == 2 and "missing" in err


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "COMMAND" in capsys.readouterr().out


def test_an_error_is_one_line_and_a_tool_log_comes_before_it(capsys, monkeypatch):
    """A user's folder name with a newline must not split the error line; a compiler's output
    (``McutrainError.log``) is printed above the one-line message, which stays last."""
    from mcutrain.cli import main as cli_main
    from mcutrain.errors import McutrainError

    cases = [("class folder 'bad\nname' holds no images", "", "class folder 'bad\\nname' holds no images"),
             ("build failed", "gcc: line 1\nline 2\n", "build failed")]
    for message, log, shown in cases:
        def func(args, message=message, log=log):
            raise McutrainError(message, log=log)

        parsed = type("Args", (), {"func": staticmethod(func), "command": "zoo"})()
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda self, argv=None, p=parsed: p)
        assert cli_main.main(["zoo"]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines == log.splitlines() + [f"mcutrain zoo: error: {shown}"]


@pytest.mark.parametrize("argv", [
    ["zoo"], ["scheme", "list", "--model", "tiny"], ["compile", "tiny"], ["finetune", "m", "--data", "digits"],
    ["pretrain", "--model", "tiny", "--data", "digits", "--out", "x"], ["analyze", "m", "--data", "digits"],
    ["search", "m", "--contrib", "c.json", "--budget", "1MB"]])
@pytest.mark.parametrize("side", ["100000", "-1", "7", "1e9", "x"])
def test_every_resolution_option_is_checked_before_any_work(capsys, argv, side):
    """A side of 100000 once sized a tensor of 120 GB (finetune) or hung (compile)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--resolution", side])
    assert exit_.value.code == 2
    assert "argument --resolution: must be" in capsys.readouterr().err.splitlines()[-1]

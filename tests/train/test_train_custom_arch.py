"""A user's own architecture end to end: JSON -> pretrain -> quantize -> compile, and the files need
the JSON file no more once written (the spec travels inside them)."""

import json

import pytest

from mcutrain.cli import cmd_compile, cmd_pretrain, cmd_quantize
from mcutrain.errors import McutrainError
from mcutrain.io.container import read_versioned_container
from mcutrain.models import spec_from_json
from mcutrain.models.zoo import forget_loaded_specs
from mcutrain.quant.model_file import load_qmodel
from mcutrain.train.checkpoint import load_checkpoint
from mcutrain.train.pretrain import PretrainConfig, pretrain
from tests.helpers.arch import custom_doc, write_doc
from tests.helpers.cli import run_command


def _json_out(module, argv):
    code, out = run_command(module, [module.__name__.rsplit("_", 1)[1]] + argv + ["--json"])
    assert code == 0
    return json.loads(out)


def test_pretrain_quantize_compile_a_json_architecture(tmp_path):
    arch = write_doc(tmp_path / "my-tiny.json", custom_doc())
    spec = spec_from_json(custom_doc())
    ckpt, int8 = tmp_path / "c.safetensors", tmp_path / "q.safetensors"
    summary = _json_out(cmd_pretrain, ["--model", str(arch), "--data", "digits", "--out", str(ckpt),
                                       "--epochs", "1", "--batch-size", "32", "--lr", "0.05", "--quiet"])
    assert summary["model"] == "my-tiny" and summary["resolution"] == 16  # the JSON's default_resolution
    arch.unlink()  # from here on, nothing needs the JSON file

    forget_loaded_specs()  # as in a fresh process: only the file knows the architecture
    model, info = load_checkpoint(ckpt)
    assert model.spec == spec and info.model == "my-tiny"
    assert read_versioned_container(ckpt, "float-checkpoint", (1, 2))[0] == 2

    forget_loaded_specs()
    _json_out(cmd_quantize, [str(ckpt), "--data", "digits", "--out", str(int8), "--calibration-batches", "2"])
    forget_loaded_specs()
    assert load_qmodel(int8).spec == spec
    assert read_versioned_container(int8, "int8-model", (1, 2))[0] == 2

    forget_loaded_specs()
    trained = _json_out(cmd_compile, [str(int8), "--scheme", "last-k:4"])
    assert trained["model"] == "my-tiny" and trained["resolution"] == 16 and trained["ops"] > 0
    assert 0 < trained["arena_bytes"] <= trained["peak_sram_bytes"]
    assert trained["trainable_sram_bytes"] > 0 and "total SRAM" in trained["text"]

    # A random-weight model of the same architecture straight from a JSON file: memory does not
    # depend on the weights, so the report is the trained model's.
    arch2 = write_doc(tmp_path / "again.json", custom_doc())
    random = _json_out(cmd_compile, [str(arch2), "--scheme", "last-k:4"])
    keys = ("peak_sram_bytes", "arena_bytes", "trainable_sram_bytes", "flash_bytes", "ops")
    assert {k: random[k] for k in keys} == {k: trained[k] for k in keys}


def test_resume_refuses_an_edited_architecture(tmp_path):
    arch = write_doc(tmp_path / "a.json", custom_doc())
    cfg = PretrainConfig(model=str(arch), data="digits", out=str(tmp_path / "c.safetensors"), epochs=1,
                         batch_size=32, resolution=8)
    pretrain(cfg, progress=False, log=lambda _m: None)
    edited = custom_doc()
    edited["blocks"][1]["mid_ch"] = 32
    write_doc(arch, edited)
    with pytest.raises(McutrainError, match="the architecture 'my-tiny' differs from the one the run started"):
        pretrain(cfg, resume=True, progress=False, log=lambda _m: None)


def test_pretrain_names_the_bad_field_before_loading_data(tmp_path):
    doc = custom_doc()
    doc["blocks"][2]["kernel"] = 9
    arch = write_doc(tmp_path / "bad.json", doc)
    cfg = PretrainConfig(model=str(arch), data="no-such-data", out=str(tmp_path / "c.safetensors"))
    with pytest.raises(McutrainError, match=r"bad\.json: blocks\[2\]\.kernel: 9 is not supported \(3, 5 or 7\)"):
        pretrain(cfg, progress=False, log=lambda _m: None)

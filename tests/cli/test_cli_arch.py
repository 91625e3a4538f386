"""The commands that take a model name take an architecture .json file (and a model file) too."""

import json

import pytest

from mcutrain.cli import cmd_scheme, cmd_zoo
from mcutrain.errors import ModelError
from mcutrain.models.zoo import forget_loaded_specs
from mcutrain.quant.model_file import save_qmodel
from tests.helpers.arch import custom_doc, write_doc
from tests.helpers.cli import run_command
from tests.helpers.models import quantized


def test_zoo_reports_a_json_architecture_next_to_a_zoo_net(tmp_path):
    arch = write_doc(tmp_path / "a.json", custom_doc())
    code, out = run_command(cmd_zoo, ["zoo", "--model", str(arch), "--model", "tiny", "--json"])
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["my-tiny", "tiny"]
    assert rows[0]["convs"] == 1 + 2 + 3 + 2 + 3 and rows[0]["resolution"] == 16  # stem + blocks (no expand: 2)


def test_zoo_names_the_bad_field(tmp_path):
    doc = custom_doc()
    doc["stem_kernel"] = 4
    with pytest.raises(ModelError, match=r"a\.json: stem_kernel: 4 is not supported"):
        run_command(cmd_zoo, ["zoo", "--model", str(write_doc(tmp_path / "a.json", doc))])


@pytest.mark.parametrize("source", ["json", "int8 file"])
def test_scheme_list_for_a_custom_architecture_offers_the_baselines(tmp_path, source):
    arch = write_doc(tmp_path / "a.json", custom_doc())
    model = str(arch)
    if source == "int8 file":
        model = str(tmp_path / "q.safetensors")
        save_qmodel(model, quantized(str(arch), 16)[0])
        arch.unlink()
        forget_loaded_specs()
    code, out = run_command(cmd_scheme, ["scheme", "list", "--model", model, "--json"])
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["full", "last-layer", "bias-only"]
    assert {r["model"] for r in rows} == {"my-tiny"} and rows[0]["n_bias"] == 11  # every conv: full

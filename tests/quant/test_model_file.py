"""The int8 model file: exact round trip; wrong, corrupt or tampered files are refused by name."""

import numpy as np
import pytest

from mcutrain.errors import CheckpointError
from mcutrain.io.container import write_container
from mcutrain.quant.model_file import KIND, load_qmodel, save_qmodel
from tests.helpers import int8_numpy
from tests.helpers.files import tamper, version_and_meta
from tests.helpers.models import int8_input, quantized


@pytest.fixture(scope="module")
def qmodel():
    return quantized("tiny", 32)[0]


def test_round_trip_is_exact(tmp_path, qmodel):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    back = load_qmodel(path)
    for a, b in zip(qmodel.convs(), back.convs()):
        assert a.name == b.name and a.x == b.x and a.y == b.y and (a.qmin, a.qmax) == (b.qmin, b.qmax)
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert np.array_equal(a.requant[0], b.requant[0])
    x = int8_input(2, 32)
    assert np.array_equal(int8_numpy.forward(qmodel, x)[0], int8_numpy.forward(back, x)[0])


@pytest.mark.parametrize("change, message", [
    (lambda m, t: t.__setitem__("blocks.1.depthwise.weight", t["blocks.1.depthwise.weight"].astype(np.int16)),
     "blocks.1.depthwise.weight is int16"),
    (lambda m, t: t.pop("classifier.bias"), "classifier.bias is missing"),
    (lambda m, t: m["convs"][2]["y"].__setitem__("scale", -1.0), "scale -1.0 must be positive"),
    (lambda m, t: m["convs"][0]["x"].__setitem__("zero", 300), "zero point 300 is outside int8"),
    (lambda m, t: m.__setitem__("arch", "resnet"), "unknown model 'resnet'"),
    (lambda m, t: m["adds"].__setitem__(0, None), "blocks.0: residual add missing"),
    (lambda m, t: m["convs"][3].__setitem__("qmin", 127), r"clamp range \[127, 127\]"),
])
def test_bad_files_are_refused_by_name(tmp_path, qmodel, change, message):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    tamper(path, KIND, change)
    with pytest.raises(CheckpointError, match=message):
        load_qmodel(path)


def test_float_checkpoint_is_not_an_int8_model(tmp_path):
    path = tmp_path / "c.safetensors"
    write_container(path, "float-checkpoint", 1, {}, {"x": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match="expected 'int8-model'"):
        load_qmodel(path)


# ---- the architecture travels with the int8 file -------------------------------------------------


def test_zoo_models_are_written_name_only_as_version_1(tmp_path, qmodel):
    path = tmp_path / "m.safetensors"
    save_qmodel(path, qmodel)
    version, meta = version_and_meta(path, KIND)
    assert version == 1 and "spec" not in meta and meta["arch"] == "tiny"


@pytest.mark.parametrize("name", ["my-tiny", "tiny"])  # "tiny": a zoo name with other layers
def test_custom_architectures_are_embedded_and_the_file_is_the_truth(tmp_path, name):
    from mcutrain.models import spec_from_json, spec_to_json
    from mcutrain.models.zoo import forget_loaded_specs, zoo_spec
    from tests.helpers.arch import custom_doc

    spec = spec_from_json(custom_doc(name), embedded=True)
    q = quantized(spec, 16)[0]
    path = tmp_path / "m.safetensors"
    save_qmodel(path, q)
    version, meta = version_and_meta(path, KIND)
    assert version == 2 and meta["spec"] == spec_to_json(spec)
    forget_loaded_specs()  # a fresh process knows only the zoo
    back = load_qmodel(path)
    assert back.spec == spec and (name != "tiny" or back.spec != zoo_spec("tiny"))
    x = int8_input(2, 16)
    assert np.array_equal(int8_numpy.forward(q, x)[0], int8_numpy.forward(back, x)[0])
    tamper(path, KIND, lambda m, t: m["spec"]["blocks"][1].__setitem__("stride", 1))
    # the stored convs are checked against the embedded spec, as against a zoo spec
    with pytest.raises(CheckpointError, match=r"m\.safetensors: blocks\.1\.depthwise: stride/groups 2/16, "
                                              r"architecture has 1/16"):
        load_qmodel(path)


def test_a_version_2_file_must_carry_its_architecture(tmp_path):
    from mcutrain.models import spec_from_json
    from tests.helpers.arch import custom_doc

    path = tmp_path / "m.safetensors"
    save_qmodel(path, quantized(spec_from_json(custom_doc()), 16)[0])
    tamper(path, KIND, lambda m, t: m.pop("spec"))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: version 2 file without its architecture"):
        load_qmodel(path)

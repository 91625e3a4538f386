import numpy as np
import pytest
import torch

from mcutrain.errors import CheckpointError
from mcutrain.io.container import write_container
from mcutrain.models import build_model
from mcutrain.train.checkpoint import KIND, CheckpointInfo, load_checkpoint, save_checkpoint
from tests.helpers.files import tamper, version_and_meta

INFO = CheckpointInfo(model="tiny", num_classes=3, resolution=32, classes=("a", "b", "c"),
                      preprocessing={"offset": 128.0, "scale": 1 / 128}, dataset="npz:x")


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model("tiny", 3).eval()
    save_checkpoint(tmp_path / "c.safetensors", model, INFO)
    loaded, info = load_checkpoint(tmp_path / "c.safetensors")
    assert info == INFO
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), loaded.eval()(x))


def test_missing_parameter_is_an_error_not_filled_in(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    tamper(path, KIND, lambda meta, tensors: tensors.pop("classifier.bias"))
    with pytest.raises(CheckpointError, match=r"missing: \['classifier.bias'\]"):
        load_checkpoint(path)


def test_wrong_shape_and_unknown_model(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    tamper(path, KIND, lambda meta, tensors: tensors.__setitem__("classifier.weight",
                                                                          np.zeros((3, 5), np.float32)))
    with pytest.raises(CheckpointError, match="classifier.weight has shape"):
        load_checkpoint(path)
    tamper(path, KIND, lambda meta, tensors: meta.__setitem__("model", "alexnet"))
    with pytest.raises(CheckpointError, match="unknown model 'alexnet'"):
        load_checkpoint(path)


def test_other_kind_is_refused(tmp_path):
    path = tmp_path / "state.safetensors"
    write_container(path, "train-state", 1, {}, {"x": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="expected 'float-checkpoint'"):
        load_checkpoint(path)


# ---- the architecture travels with the checkpoint ------------------------------------------------

def _custom_model(name="my-tiny"):
    from mcutrain.models import spec_from_json
    from tests.helpers.arch import custom_doc

    torch.manual_seed(2)
    return build_model(spec_from_json(custom_doc(name), embedded=True), 3).eval()


def test_zoo_nets_are_still_written_name_only_as_version_1(tmp_path):
    # The format earlier mcutrain wrote and read: such files (and their sha256) are unchanged.
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, build_model("tiny", 3), INFO)
    version, meta = version_and_meta(path, KIND)
    assert version == 1 and "spec" not in meta and meta["model"] == "tiny"
    assert load_checkpoint(path)[0].spec == build_model("tiny", 3).spec


def test_a_custom_architecture_is_embedded_as_version_2(tmp_path):
    from mcutrain.models import spec_to_json

    model = _custom_model()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, CheckpointInfo(**{**INFO.__dict__, "model": "my-tiny", "resolution": 16}))
    version, meta = version_and_meta(path, KIND)
    assert version == 2 and meta["spec"] == spec_to_json(model.spec)
    loaded, info = load_checkpoint(path)
    x = torch.randn(2, 3, 16, 16)
    assert loaded.spec == model.spec and info.model == "my-tiny" and torch.equal(model(x), loaded.eval()(x))


def test_an_embedded_spec_with_a_zoo_name_wins_over_the_zoo(tmp_path):
    model = _custom_model("tiny")  # a "tiny" with other layers than the zoo's
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, CheckpointInfo(**{**INFO.__dict__, "resolution": 16}))
    assert version_and_meta(path, KIND)[0] == 2
    assert load_checkpoint(path)[0].spec == model.spec != build_model("tiny", 3).spec


def test_bad_embedded_specs_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _custom_model(), CheckpointInfo(**{**INFO.__dict__, "model": "my-tiny"}))
    tamper(path, KIND, lambda meta, tensors: meta["spec"]["blocks"][3].__setitem__("kernel", 9))
    with pytest.raises(CheckpointError, match=r"c\.safetensors: embedded architecture: blocks\[3\]\.kernel: 9"):
        load_checkpoint(path)
    tamper(path, KIND, lambda meta, tensors: meta["spec"]["blocks"][3].__setitem__("kernel", 3))
    load_checkpoint(path)  # repaired
    tamper(path, KIND, lambda meta, tensors: meta.__setitem__("model", "other"))
    with pytest.raises(CheckpointError, match=r"embedded architecture is 'my-tiny', the metadata names 'other'"):
        load_checkpoint(path)
    tamper(path, KIND, lambda meta, tensors: meta.pop("spec"))
    with pytest.raises(CheckpointError, match=r"version 2 file without its architecture"):
        load_checkpoint(path)


def test_info_and_model_must_agree():
    with pytest.raises(ValueError, match="names 'tiny', the model is 'my-tiny'"):
        save_checkpoint("unused.safetensors", _custom_model(), INFO)

import numpy as np
import pytest
import torch

from mcutrain.errors import CheckpointError
from mcutrain.io.container import write_container
from mcutrain.models import build_model
from mcutrain.train.checkpoint import KIND, CheckpointInfo, load_checkpoint, save_checkpoint
from tests.helpers.files import tamper

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

"""Frontend: unsupported layers are refused by node and op; the bundled backbone compiles and trains
exactly like the simulation."""

import numpy as np
import pytest
import torch

from mcutrain.assets import DEFAULT_BACKBONE
from mcutrain.data import load_dataset
from mcutrain.engine.compile import compile_training
from mcutrain.engine.executor import Executor
from mcutrain.engine.executor.compare import differences, qmodel_params, run_engine, simulate
from mcutrain.engine.frontend import UnsupportedError, graph_from_qmodel
from mcutrain.quant.quantize import quantize_model
from mcutrain.quant.random_model import random_qmodel
from mcutrain.quant.sim_model import Int8Net
from mcutrain.sparse import get_builtin, resolve
from mcutrain.sparse.permute import prepare_model
from mcutrain.train.checkpoint import load_checkpoint


def test_an_unsupported_layer_is_named_with_its_op(monkeypatch):
    q, _ = random_qmodel("tiny", 16)
    original = Int8Net.features

    def features_with_sigmoid(self, x_q):
        return torch.sigmoid(original(self, x_q))

    monkeypatch.setattr(Int8Net, "features", features_with_sigmoid)
    with pytest.raises(UnsupportedError, match=r"node 'sigmoid': op call_function .*sigmoid.* is not supported"):
        graph_from_qmodel(q)


@pytest.fixture(scope="module")
def backbone_int8():
    torch.set_num_threads(1)
    model, info = load_checkpoint(DEFAULT_BACKBONE)
    data = load_dataset("fashion-mnist", seed=0)
    return quantize_model(model, info, data.train, batches=2, batch_size=32), data


def test_bundled_backbone_trains_like_the_simulation(backbone_int8):
    qmodel, data = backbone_int8
    plan = resolve(get_builtin("paper-99kb", qmodel.spec.name), qmodel.spec)
    qmodel = prepare_model(qmodel, plan)
    images = data.test.images[:3].astype(np.int16).transpose(0, 3, 1, 2)
    # 28x28 grey -> the model's 64x64x3 int8 input, as the loader would (resize, repeat, p - 128)
    x = torch.nn.functional.interpolate(torch.from_numpy(images).float(), size=(64, 64), mode="bilinear",
                                        align_corners=False).round().clamp(0, 255).repeat(1, 3, 1, 1)
    x_q = (x - 128).to(torch.int8).numpy()
    labels = data.test.labels[:3]
    program = compile_training(qmodel, plan, lr=0.05, seed=5)
    engine = run_engine(Executor(program), x_q, labels)
    reference = simulate(qmodel, plan, x_q, labels, lr=0.05, seed=5)
    d = differences(engine, reference, qmodel_params(qmodel))
    assert d["moved"] > 100, d
    assert d["max_lsb"] <= 1 and d["differing_fraction"] <= 1e-3 and d["bias_error"] <= 1, d
    assert d["loss_rel_error"] <= 1e-5, d

"""PyTorch modules -> FloatGraph: the graph computes what the module computes; user files and state dicts;
unsupported layers named in one line."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mcutrain.errors import McutrainError
from mcutrain.models.float_graph import run_float
from mcutrain.models.torch_import import TorchImportError, import_module, load_user_module, load_weights
from tests.models.torch_models import mobilenet_v2, plain_cnn, small_resnet

MODELS = {"mobilenet_v2": (mobilenet_v2, 32), "plain_cnn": (plain_cnn, 32), "small_resnet": (small_resnet, 16)}


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters too (fresh ones are the identity)."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)
    return module.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_graph_forward_equals_the_module(name):
    builder, side = MODELS[name]
    torch.manual_seed(0)
    model = randomized(builder.build(10))
    x = torch.randn(4, 3, side, side)
    graph = import_module(model, x[:1])
    with torch.no_grad():
        assert torch.allclose(run_float(graph, x), model(x), rtol=1e-5, atol=1e-6)
    kinds = {n.kind for n in graph.nodes}
    assert {"conv2d", "batchnorm", "linear"} <= kinds
    assert graph.shapes[graph.output] == (10,)


def test_torchvision_layout_and_node_names():
    graph = import_module(mobilenet_v2.build(10), torch.zeros(1, 3, 32, 32))
    names = [n.name for n in graph.nodes]
    assert names[:3] == ["features.0.0", "features.0.1", "features.0.2"]
    assert "features.2.conv.1.0" in names and names[-1] == "classifier.1"
    dw = next(n for n in graph.nodes if n.name == "features.2.conv.1.0").params
    assert dw.groups == dw.weight.shape[0] > 1 and dw.stride == (2, 2)
    assert [n.kind for n in graph.nodes].count("add") == 2  # the small setting's residual blocks
    assert not any(n.name.startswith("classifier.0") for n in graph.nodes)  # dropout dropped


def test_imagenet_size_mobilenet_v2():
    """The full torchvision configuration (1000 classes, the 320 -> 1280 conv included) at 224 x 224."""
    torch.manual_seed(2)
    model = randomized(mobilenet_v2.MobileNetV2(1000))
    x = torch.randn(1, 3, 224, 224)
    graph = import_module(model, x)
    with torch.no_grad():
        assert torch.allclose(run_float(graph, x), model(x), rtol=1e-5, atol=1e-6)
    convs = [n for n in graph.nodes if n.kind == "conv2d"]
    assert len(convs) == 52 and convs[-1].name == "features.18.0" and convs[-1].params.weight.shape[:2] == (1280, 320)
    assert [n.kind for n in graph.nodes].count("add") == 10 and graph.shapes[graph.output] == (1000,)


def test_user_file_and_saved_state_dict(tmp_path):
    """A user's file with a builder and torch.save(model.state_dict()) import to the trained model."""
    user_file = tmp_path / "my_model.py"
    shutil.copy(Path(mobilenet_v2.__file__), user_file)
    torch.manual_seed(1)
    trained = randomized(mobilenet_v2.build(10), seed=5)
    torch.save(trained.state_dict(), tmp_path / "state.pt")
    module = load_user_module(f"{user_file}:build")
    assert type(module).__module__ != type(trained).__module__  # the user's own class, from the user's file
    load_weights(module, tmp_path / "state.pt")
    x = torch.randn(3, 3, 32, 32)
    graph = import_module(module, x[:1])
    with torch.no_grad():
        assert torch.allclose(run_float(graph, x), trained(x), rtol=1e-5, atol=1e-6)


def _message(call) -> str:
    with pytest.raises(McutrainError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text
    return text


def test_weight_mismatches_are_listed_by_name(tmp_path):
    state = small_resnet.build(10).state_dict()
    state.pop("fc.bias")
    state["fc.weight"] = torch.zeros(5, 64)
    state["extra.weight"] = torch.zeros(1)
    for i in range(6):
        state.pop(f"layers.0.bn{1 + i % 2}.{['weight', 'bias', 'running_mean'][i // 2]}")
    torch.save(state, tmp_path / "s.pt")
    text = _message(lambda: load_weights(small_resnet.build(10), tmp_path / "s.pt"))
    assert "missing 7: layers.0.bn1.weight, layers.0.bn1.bias" in text and "and 3 more" in text
    assert "unexpected 1: extra.weight" in text
    assert "fc.weight [5, 64] vs [10, 64]" in text


def test_hostile_weights_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"w": Evil()}))
    text = _message(lambda: load_weights(small_resnet.build(10), tmp_path / "evil.pt"))
    assert "weights_only" in text and not marker.exists()
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    assert "expected a state dict" in _message(lambda: load_weights(small_resnet.build(10), tmp_path / "list.pt"))


def test_user_module_errors_are_one_line(tmp_path):
    assert "FILE.py:FUNCTION" in _message(lambda: load_user_module("model.py"))
    assert "no such file" in _message(lambda: load_user_module(f"{tmp_path}/none.py:build"))
    (tmp_path / "m.py").write_text("def build():\n    raise ValueError('bad\\nwidth')\n\ndef other():\n    return 3\n")
    assert "ValueError: bad\\nwidth" in _message(lambda: load_user_module(f"{tmp_path}/m.py:build"))
    assert "no function 'nope'" in _message(lambda: load_user_module(f"{tmp_path}/m.py:nope"))
    assert "not a torch.nn.Module" in _message(lambda: load_user_module(f"{tmp_path}/m.py:other"))


class _Net(nn.Module):
    def __init__(self, body) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.body = body
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.body(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("body,needle", [
    (nn.Sigmoid(), "fx node 2 'body' (call_module body (Sigmoid)): unsupported layer"),
    (nn.Conv2d(4, 4, 3, padding=2, dilation=2), "dilation"),
    (nn.Conv2d(4, 4, 3, padding=1, groups=2), "groups=2"),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode 'reflect'"),
    (nn.AvgPool2d(3, 1, 1), "count_include_pad"),
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode"),
    (nn.AdaptiveAvgPool2d(2), "output size 1"),
    (nn.BatchNorm2d(4, track_running_stats=False), "track_running_stats"),
])
def test_unsupported_layers_are_named(body, needle):
    x = torch.zeros(1, 3, 7, 7)
    with pytest.raises(TorchImportError) as err:
        import_module(_Net(body), x)
    assert needle in str(err.value) and "\n" not in str(err.value)


class _Functional(nn.Module):
    def __init__(self, op) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.op = op

    def forward(self, x):
        return self.op(self.conv(x)).flatten(1)


@pytest.mark.parametrize("op,needle", [
    (lambda y: y * 2, "call_function mul"),
    (lambda y: y + 1.0, "two tensors"),
    (lambda y: F.relu(y, inplace=True) + y, "in place"),
    (lambda y: y[:, :2], "getitem"),
])
def test_unsupported_functions_are_named(op, needle):
    with pytest.raises(TorchImportError, match="fx node") as err:
        import_module(_Functional(op), torch.zeros(1, 3, 5, 5))
    assert needle in str(err.value)


class _Variety(nn.Module):
    """Every spelling of the supported operators at once."""

    def __init__(self, kernel, stride, padding, depthwise: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding="same")
        self.conv = nn.Conv2d(6, 6, kernel, stride, padding, groups=6 if depthwise else 1, bias=not depthwise)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.Hardtanh(0.0, 6.0)
        self.id = nn.Identity()
        self.flat = nn.Flatten()

    def forward(self, x):
        y = torch.relu(self.stem(x))
        z = F.hardtanh(self.bn(self.conv(y)), 0.0, 6.0)
        z = self.act(self.id(z)).relu()
        z = torch.add(z, F.max_pool2d(z, 3, 1, 1))
        z = F.avg_pool2d(z, 2, 1, 1, count_include_pad=False)
        z = F.dropout(z, 0.5, training=self.training)
        a = self.flat(F.adaptive_avg_pool2d(z, 1))
        b = z.mean(dim=[-1, -2], keepdim=True).reshape(z.shape[0], -1)
        return a + b.contiguous()


@settings(max_examples=20, deadline=None)
@given(kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)), stride=st.integers(1, 2),
       padding=st.one_of(st.sampled_from(["same", "valid"]), st.tuples(st.integers(0, 2), st.integers(0, 2))),
       depthwise=st.booleans(), seed=st.integers(0, 2**16))
def test_every_spelling_and_geometry(kernel, stride, padding, depthwise, seed):
    if padding == "same":
        stride = 1  # torch allows 'same' with stride 1 only
    torch.manual_seed(seed)
    model = randomized(_Variety(kernel, stride, padding, depthwise), seed)
    x = torch.randn(2, 3, 9, 8)
    try:
        with torch.no_grad():
            want = model(x)
    except RuntimeError:
        return  # the kernel does not fit: torch refuses too
    graph = import_module(model, x[:1])
    with torch.no_grad():
        assert torch.allclose(run_float(graph, x), want, rtol=1e-5, atol=1e-5)

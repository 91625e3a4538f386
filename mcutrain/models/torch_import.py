"""PyTorch modules in: an ``nn.Module`` (and an example input) -> a ``FloatGraph`` (issue 13 item 4).

Why: users hold PyTorch models written their own way (torchvision's MobileNetV2, a plain CNN, a ResNet),
not the zoo's classes. ``import_module`` traces the module with torch.fx (symbolic tracing: the module's
Python runs once on proxies, so any control flow that depends on values cannot be traced) and maps
each fx node to a FloatGraph node. The module is put in eval mode first: BatchNorm uses its running
statistics, Dropout is dropped. Weights are copied as float32.

Supported (anything else is one error line naming the fx node, its op/target and its position):
  nn.Conv2d (groups 1 or depthwise with multiplier 1, dilation 1, zero padding given as numbers or
  'same'/'valid'), nn.BatchNorm2d (running statistics), ReLU and ReLU6 (modules, F.relu/F.relu6/
  torch.relu/x.relu(), F.hardtanh(x, 0, 6); in place or not), nn.Identity/Dropout/F.dropout/x.contiguous()
  (dropped), ``a + b``/torch.add/x.add (two tensors of one shape), nn.AdaptiveAvgPool2d(1)/
  F.adaptive_avg_pool2d(x, 1)/x.mean((2, 3)) (global average), nn.AvgPool2d/F.avg_pool2d (padding only with
  count_include_pad=False), nn.MaxPool2d/F.max_pool2d (dilation 1), torch.flatten(x, 1)/nn.Flatten/
  x.view(n, -1)/x.reshape(n, -1), nn.Linear.

``load_user_module("my_model.py:build")`` imports the user's Python file and calls ``build()``: it RUNS
THE USER'S CODE, as ``python my_model.py`` would. ``load_weights`` reads a state dict with
``torch.load(weights_only=True)`` (tensors and plain containers only: nothing in the file runs) and
maps it onto the module by module path (``features.0.0.weight``), listing mismatches by name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import operator
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from mcutrain.errors import McutrainError, ModelError, one_line
from mcutrain.models.float_graph import (BatchNorm, Conv2d, FloatGraph, FloatGraphError, GlobalAvgPool,
                                         InputPreprocessing, Linear, Node, Pool2d, run_float)

_DROPPED_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)
_RELU_FUNCS = (F.relu, torch.relu, torch.relu_)
_ADD_FUNCS = (operator.add, operator.iadd, torch.add)
_SHAPE_OPS = {("call_method", "size"), ("call_function", getattr), ("call_function", operator.getitem),
              ("call_function", operator.mul), ("call_function", operator.floordiv)}
MAX_LISTED = 4  # names listed in a weights mismatch before "and N more"


class TorchImportError(ModelError):
    """A module that cannot become a FloatGraph (an unsupported layer, an untraceable forward)."""


def import_module(module: nn.Module, example_input: torch.Tensor,
                  preprocessing: InputPreprocessing = InputPreprocessing(), classes: tuple[str, ...] = (),
                  source: str = "") -> FloatGraph:
    """The FloatGraph of ``module`` (put in eval mode) for inputs shaped like ``example_input`` [N, C, H, W]."""
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4 or not example_input.is_floating_point():
        raise TorchImportError("the example input must be a float tensor [N, C, H, W]")
    module.eval()
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as err:  # noqa: BLE001 -- any error of the user's forward under tracing
        raise TorchImportError(f"torch.fx cannot trace {type(module).__name__}: {type(err).__name__}: "
                               f"{one_line(str(err))[:300]}") from None
    values = _record_values(traced, example_input.float())
    graph = _Builder(traced, values, tuple(example_input.shape[1:]), preprocessing, classes,
                     source or type(module).__name__).build()
    _check_forward(graph, values, example_input.float())
    return graph


def _record_values(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict:
    """Every fx node's value on ``x``: shapes decide flattens, and the output checks the import."""
    values: dict = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            values[n] = super().run_node(n)
            return values[n]

    try:
        with torch.no_grad():
            Recorder(gm).run(x)
    except Exception as err:  # noqa: BLE001 -- the user's module failed on the example input
        raise TorchImportError(f"the module fails on an input of shape {list(x.shape)}: {type(err).__name__}: "
                               f"{one_line(str(err))[:300]}") from None
    return values


def _check_forward(g: FloatGraph, values: dict, x: torch.Tensor) -> None:
    """The graph must compute what the module computed (else a mapping here is wrong: a bug to report)."""
    ref = next(v for n, v in values.items() if n.op == "output")
    with torch.no_grad():
        out = run_float(g, x)
    tol = 1e-4 * max(1.0, float(ref.abs().max()))
    if out.shape != ref.shape or not torch.allclose(out, ref, rtol=1e-4, atol=tol):
        raise TorchImportError("the imported graph does not compute the module's output on the example input "
                               "(an in-place change of a reused tensor?); please report this model")


def _target_name(gm: torch.fx.GraphModule, n: torch.fx.Node) -> str:
    if n.op == "call_module":
        return f"{n.target} ({type(gm.get_submodule(n.target)).__name__})"
    return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", repr(n.target))


def _arg(n: torch.fx.Node, index: int, name: str, default=None):
    return n.args[index] if len(n.args) > index else n.kwargs.get(name, default)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Builder:
    def __init__(self, gm, values, input_shape, preprocessing, classes, source) -> None:
        self.gm, self.values, self.input_shape = gm, values, input_shape
        self.preprocessing, self.classes, self.source = preprocessing, tuple(classes), source
        self.tensor: dict[torch.fx.Node, str] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.input = self.output = ""

    def build(self) -> FloatGraph:
        order = list(self.gm.graph.nodes)
        for pos, n in enumerate(order):
            self.pos, self.n = pos, n
            self.visit(n)
        g = FloatGraph(tuple(self.nodes), self.input, self.output, self.input_shape, self.preprocessing,  # type: ignore
                       self.classes, {"source": self.source, "importer": "mcutrain-torch-fx-v1"})
        try:
            shapes = g.shapes
        except FloatGraphError as err:
            raise TorchImportError(f"the imported graph is not valid: {err}") from None
        if len(shapes[g.output]) != 1:
            raise TorchImportError(f"the model's output has shape [N, {', '.join(map(str, shapes[g.output]))}]; "
                                   f"a classifier's logits [N, K] are expected")
        return g

    # -- helpers ---------------------------------------------------------------------------------

    def fail(self, reason: str) -> TorchImportError:
        n = self.n
        return TorchImportError(f"cannot import fx node {self.pos} '{n.name}' ({n.op} "
                                f"{_target_name(self.gm, n)}): {reason}")

    def src(self, i: int = 0) -> str:
        """The graph tensor of the node's i-th argument."""
        a = self.n.args[i] if i < len(self.n.args) else None
        if not isinstance(a, torch.fx.Node) or a not in self.tensor:
            raise self.fail(f"argument {i} is not a tensor the graph computes")
        return self.tensor[a]

    def shape(self, node_or_arg) -> tuple[int, ...]:
        return tuple(self.values[node_or_arg].shape)

    def emit(self, kind: str, inputs: tuple[str, ...], params=None) -> None:
        n = self.n
        name = n.target if n.op == "call_module" and n.target not in self.names else n.name
        self.names.add(name)
        self.nodes.append(Node(kind, name, inputs, n.name, params))
        self.tensor[n] = n.name

    def alias(self) -> None:
        self.tensor[self.n] = self.src(0)

    def check_inplace(self) -> None:
        """An in-place op changes its input for every later user; the graph keeps values: refuse that case."""
        src = self.n.args[0]
        later = [u.name for u in src.users if u is not self.n and _after(u, self.n)]
        if later:
            raise self.fail(f"changes '{src.name}' in place, which {', '.join(later)} reads later; "
                            f"use inplace=False")

    # -- dispatch --------------------------------------------------------------------------------

    def visit(self, n: torch.fx.Node) -> None:
        value = self.values.get(n)
        if n.op == "placeholder":
            if self.input:
                raise self.fail("the model takes more than one input")
            self.input = self.tensor[n] = n.name
        elif n.op == "output":
            out = n.args[0]
            if not isinstance(out, torch.fx.Node) or out not in self.tensor:
                raise self.fail("the model must return one tensor (its logits)")
            self.output = self.tensor[out]
        elif n.op == "get_attr":
            raise self.fail("the forward uses a parameter or buffer directly; only modules hold weights here")
        elif not isinstance(value, torch.Tensor):
            if (n.op, n.target) not in _SHAPE_OPS:
                raise self.fail("computes a non-tensor value")
        elif not value.is_floating_point():
            raise self.fail(f"computes a {value.dtype} tensor; only float tensors are supported")
        elif n.op == "call_module":
            self.module(self.gm.get_submodule(n.target))
        elif n.op == "call_function":
            self.function(n.target)
        elif n.op == "call_method":
            self.method(n.target)
        else:
            raise self.fail("unsupported fx op")

    def module(self, m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d:
            self.conv(m)
        elif type(m) is nn.BatchNorm2d:
            self.batchnorm(m)
        elif type(m) in (nn.ReLU, nn.ReLU6) or (type(m) is nn.Hardtanh and (m.min_val, m.max_val) == (0.0, 6.0)):
            if m.inplace:
                self.check_inplace()
            self.emit("relu" if type(m) is nn.ReLU else "relu6", (self.src(),))
        elif isinstance(m, _DROPPED_MODULES):
            self.alias()
        elif type(m) is nn.AdaptiveAvgPool2d:
            self.global_pool(_pair(m.output_size) if m.output_size is not None else None, True)
        elif type(m) in (nn.AvgPool2d, nn.MaxPool2d):
            kind = "avgpool" if type(m) is nn.AvgPool2d else "maxpool"
            extra = {"count_include_pad": m.count_include_pad, "divisor_override": m.divisor_override} \
                if kind == "avgpool" else {"dilation": m.dilation, "return_indices": m.return_indices}
            self.pool(kind, m.kernel_size, m.stride, m.padding, extra)
        elif type(m) is nn.Flatten:
            self.flatten()
        elif type(m) is nn.Linear:
            self.linear(m)
        else:
            raise self.fail("unsupported layer")

    def function(self, f) -> None:
        n = self.n
        if f in _RELU_FUNCS or (f is F.relu6) or (f is F.hardtanh and (_arg(n, 1, "min_val", -1.0),
                                                                        _arg(n, 2, "max_val", 1.0)) == (0.0, 6.0)):
            if f is torch.relu_ or _arg(n, 1 if f is not F.hardtanh else 3, "inplace", False):
                self.check_inplace()
            self.emit("relu6" if f in (F.relu6, F.hardtanh) else "relu", (self.src(),))
        elif f in _ADD_FUNCS:
            self.add()
        elif f is F.dropout:
            self.alias()
        elif f is F.adaptive_avg_pool2d:
            self.global_pool(_pair(_arg(n, 1, "output_size")), True)
        elif f is torch.mean:
            self.mean()
        elif f is F.avg_pool2d:
            self.pool("avgpool", _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0),
                      {"count_include_pad": _arg(n, 5, "count_include_pad", True),
                       "divisor_override": _arg(n, 6, "divisor_override")})
        elif f is F.max_pool2d:
            self.pool("maxpool", _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0),
                      {"dilation": _arg(n, 4, "dilation", 1), "return_indices": _arg(n, 6, "return_indices", False)})
        elif f is torch.flatten:
            self.flatten()
        else:
            raise self.fail("unsupported function")

    def method(self, name: str) -> None:
        if name in ("relu", "relu_"):
            if name == "relu_":
                self.check_inplace()
            self.emit("relu", (self.src(),))
        elif name in ("add", "add_", "__add__", "__iadd__"):
            self.add()
        elif name == "mean":
            self.mean()
        elif name in ("view", "reshape", "flatten"):
            self.flatten()
        elif name == "contiguous":
            self.alias()
        else:
            raise self.fail("unsupported tensor method")

    # -- layers ----------------------------------------------------------------------------------

    def conv(self, m: nn.Conv2d) -> None:
        if m.padding_mode != "zeros" or _pair(m.dilation) != (1, 1):
            raise self.fail(f"padding_mode {m.padding_mode!r} and dilation {m.dilation}: only zero padding "
                            f"and dilation 1 are supported")
        if m.groups != 1 and not (m.groups == m.in_channels == m.out_channels):
            raise self.fail(f"groups={m.groups} with {m.in_channels} inputs and {m.out_channels} outputs: only "
                            f"groups 1 or depthwise (groups = in = out channels) are supported")
        kh, kw = _pair(m.kernel_size)
        if m.padding == "valid":
            pad = (0, 0, 0, 0)
        elif m.padding == "same":  # torch's 'same' (stride 1): the odd extra row/column at the bottom/right
            pad = (((kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2))
        else:
            ph, pw = _pair(m.padding)
            pad = (ph, ph, pw, pw)
        bias = None if m.bias is None else _numpy(m.bias)
        self.emit("conv2d", (self.src(),), Conv2d(_numpy(m.weight), bias, _pair(m.stride), pad, m.groups))

    def batchnorm(self, m: nn.BatchNorm2d) -> None:
        if m.running_mean is None or m.running_var is None:
            raise self.fail("track_running_stats=False: no running statistics to use in eval mode")
        c = m.num_features
        weight = _numpy(m.weight) if m.weight is not None else np.ones(c, np.float32)
        bias = _numpy(m.bias) if m.bias is not None else np.zeros(c, np.float32)
        self.emit("batchnorm", (self.src(),), BatchNorm(weight, bias, _numpy(m.running_mean),
                                                        _numpy(m.running_var), float(m.eps)))

    def add(self) -> None:
        n = self.n
        if len(n.args) != 2 or not all(isinstance(a, torch.fx.Node) and a in self.tensor for a in n.args):
            raise self.fail("adds something other than two tensors the graph computes")
        if _arg(n, 2, "alpha", 1) != 1:
            raise self.fail("add with alpha != 1")
        if self.shape(n.args[0]) != self.shape(n.args[1]):
            raise self.fail(f"adds shapes {list(self.shape(n.args[0]))} and {list(self.shape(n.args[1]))}; "
                            f"broadcasting is not supported")
        self.emit("add", (self.src(0), self.src(1)))

    def global_pool(self, output_size, keep_dims: bool) -> None:
        if output_size != (1, 1):
            raise self.fail(f"adaptive average pool to {output_size}; only output size 1 is supported")
        self.emit("global_avgpool", (self.src(),), GlobalAvgPool(keep_dims))

    def mean(self) -> None:
        n = self.n
        dims = _arg(n, 1, "dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        rank = len(self.shape(n.args[0]))
        if rank != 4 or sorted(d % 4 for d in dims) != [2, 3]:
            raise self.fail(f"mean over dims {dims} of a {rank}-D tensor; only the mean over H and W (2, 3) of "
                            f"[N, C, H, W] is supported")
        self.global_pool((1, 1), bool(_arg(n, 2, "keepdim", False)))

    def pool(self, kind: str, kernel, stride, padding, extra: dict) -> None:
        kernel = _pair(kernel)
        stride = kernel if stride is None or stride == [] else _pair(stride)
        ph, pw = _pair(padding)
        if kind == "avgpool" and (extra["divisor_override"] is not None or (extra["count_include_pad"] and ph + pw)):
            raise self.fail("average pool with divisor_override, or padding counted in the average "
                            "(use count_include_pad=False)")
        if kind == "maxpool" and (_pair(extra["dilation"]) != (1, 1) or extra["return_indices"]):
            raise self.fail("max pool with dilation or return_indices")
        params = Pool2d(kernel, stride, (ph, ph, pw, pw))
        s = self.shape(self.n.args[0])
        expect = ((s[2] + 2 * ph - kernel[0]) // stride[0] + 1, (s[3] + 2 * pw - kernel[1]) // stride[1] + 1)
        if tuple(self.shape(self.n)[2:]) != expect:
            raise self.fail("ceil_mode adds a partial window; only ceil_mode=False windows are supported")
        self.emit(kind, (self.src(),), params)

    def flatten(self) -> None:
        s_in, s_out = self.shape(self.n.args[0]), self.shape(self.n)
        if len(s_in) == 2 and s_out == s_in:
            self.alias()
        elif len(s_in) == 4 and s_out == (s_in[0], s_in[1] * s_in[2] * s_in[3]):
            self.emit("flatten", (self.src(),))
        else:
            raise self.fail(f"reshapes {list(s_in)} to {list(s_out)}; only flattening [N, C, H, W] to "
                            f"[N, C*H*W] is supported")

    def linear(self, m: nn.Linear) -> None:
        if len(self.shape(self.n.args[0])) != 2:
            raise self.fail(f"a linear layer on a {len(self.shape(self.n.args[0]))}-D tensor; flatten to "
                            f"[N, C] first")
        bias = None if m.bias is None else _numpy(m.bias)
        self.emit("linear", (self.src(),), Linear(_numpy(m.weight), bias))


def _after(a: torch.fx.Node, b: torch.fx.Node) -> bool:
    """Whether fx node ``a`` comes after ``b`` in the graph."""
    node = b.next
    while node.op != "root":
        if node is a:
            return True
        node = node.next
    return False


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


# ---------------------------------------------------------------------------------------------- user files


def load_user_module(spec: str) -> nn.Module:
    """``"path/to/file.py:builder"``: import the file (RUNNING ITS CODE) and return ``builder()``."""
    path_text, sep, builder = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not sep or not builder.isidentifier() or path.suffix != ".py":
        raise McutrainError(f"{spec!r}: expected FILE.py:FUNCTION, e.g. my_model.py:build")
    if not path.is_file():
        raise McutrainError(f"{path}: no such file")
    name = "mcutrain_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    try:
        loader_spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod  # dataclasses and pickling look modules up by name
        loader_spec.loader.exec_module(mod)
        fn = getattr(mod, builder, None)
        if not callable(fn):
            raise McutrainError(f"{path} defines no function {builder!r}")
        module = fn()
    except McutrainError:
        raise
    except BaseException as err:  # noqa: BLE001 -- the user's code; its error becomes one line
        if isinstance(err, KeyboardInterrupt):
            raise
        raise McutrainError(f"{spec}: running the user's code failed: {type(err).__name__}: "
                            f"{one_line(str(err))[:300]}") from None
    if not isinstance(module, nn.Module):
        raise McutrainError(f"{spec} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def load_weights(module: nn.Module, path) -> None:
    """Load a state dict file (``torch.load(weights_only=True)``) into ``module`` by module path; any
    missing, unexpected or shape-mismatched key is one error line listing names."""
    path = Path(path)
    if not path.is_file():
        raise McutrainError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about a pickle protocol it then refuses or reads anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- a foreign, corrupt or hostile file
        raise McutrainError(f"{path}: not a PyTorch state dict that loads with weights_only=True "
                            f"({type(err).__name__}: {one_line(str(err))[:200]})") from None
    if isinstance(state, dict) and set(state) == {"state_dict"}:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise McutrainError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    check_state(module.state_dict(), state, path)
    module.load_state_dict(state, strict=False)


def check_state(expected: dict, state: dict, path) -> None:
    """One error line naming the keys that do not match (a few of each, then a count)."""
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    bad = [k for k in expected if k in state and state[k].is_floating_point()
           and not bool(torch.isfinite(state[k]).all())]
    parts = [f"{label} {_listed(names)}" for label, names in (
        ("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs module)", shapes),
        ("non-finite values in", bad)) if names]
    if parts:
        raise McutrainError(f"{path}: weights do not match the module: {'; '.join(parts)}")


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f"{len(names)}: {shown}{more}"

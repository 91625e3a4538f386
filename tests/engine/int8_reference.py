"""An independent re-implementation of one int8-backward training step, for the tests.

Why: the engine's int8 mode is a lowering pass, kernels that call the spec, an arena, in-place
buffers and fused updates; this walks the float joint graph of ``autodiff.differentiate`` (no pass,
no int8 kernel, no arena) and applies ``quant.int8_grad``'s definition op by op, with its own
contractions (torch's float64 conv gradients, exact on these integers), its own factors and its own
random words (``rng.uniform_u32``). All gradients first, then all updates: the engine's order
(every reader of an old parameter before its update) must give the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from mcutrain.engine.autodiff import differentiate, param_gradients
from mcutrain.engine.executor.kernels import KERNELS
from mcutrain.engine.frontend import graph_from_qmodel
from mcutrain.engine.loss import append_loss
from mcutrain.quant import int8_grad as ig
from mcutrain.quant.rng import uniform_u32
from mcutrain.train.int8_optim import qas_factors


class Int8Reference:
    def __init__(self, qmodel, plan, *, lr: float, seed: int):
        self.graph = differentiate(append_loss(graph_from_qmodel(qmodel, plan)), plan)
        self.lr, self.seed, self.step = lr, seed, 0
        self.params = {p: np.array(self.graph.constants[p], copy=True) for p in self.graph.params}
        self.grads = param_gradients(self.graph)

    def value(self, values: dict, name: str):
        if name in values:
            return values[name]
        return self.params[name] if name in self.params else self.graph.constants[name]

    def train_step(self, image: np.ndarray, label: int) -> dict[str, np.ndarray]:
        self.step += 1
        values = {"image": image[None], "label": np.array([label], np.int32)}
        for op in self.graph.ops:
            args = [self.value(values, n) for n in op.inputs]
            if op.phase == "forward" or op.kind == "softmax_ce":
                outs = KERNELS[op.kind](op, args, self.step)  # the forward is not what is tested here
            else:
                outs = BACKWARD[op.kind](op, args)
            values.update(zip(op.outputs, outs))
        for param, grad in self.grads.items():
            self._update(param, *values[grad])
        return {k: v.copy() for k, v in self.params.items()}

    def _update(self, param: str, grad: np.ndarray, exponent: int) -> None:
        reader = next(op for op in self.graph.ops if op.phase == "forward" and param in op.inputs)
        w_scale = self.graph.constants[f"{reader.name}.w_scale"]
        weight, bias = qas_factors(w_scale, reader.attr("x_scale"), reader.attr("frozen", ()), True)
        is_weight = self.graph.tensor(param).role == "weight"
        m_c, x_c = ig.update_factor(self.lr, (weight if is_weight else bias)[: grad.shape[0]])
        p = self.params[param]
        kept = tuple(slice(0, k) for k in grad.shape)
        shape = (-1,) + (1,) * (grad.ndim - 1)
        if is_weight:
            n_convs = sum(op.kind == "conv2d" for op in self.graph.ops)
            tensor_id = reader.attr("index") if reader.kind == "conv2d" else n_convs
            r = uniform_u32(self.seed, self.step, tensor_id, grad.size).reshape(grad.shape)
            p[kept] = ig.update_weight(p[kept], grad, exponent, m_c.reshape(shape), x_c.reshape(shape), r)
        else:
            p[kept] = ig.update_bias(p[kept], grad, exponent, m_c, x_c)


def _factor(real) -> tuple:
    m, sh = ig.grad_multiplier(np.asarray(real, np.float32).astype(np.float64))
    return (m[0], sh[0]) if m.size == 1 else (m, sh)


def _exact(t: torch.Tensor) -> np.ndarray:
    return np.rint(t.numpy()).astype(np.int64)


def _geometry(op):
    s, p = op.attr("stride"), op.attr("pad")
    return dict(stride=s, padding=p, groups=op.attr("groups"))


def _loss(g, scale):
    return ig.normalize(g.astype(np.float64) * scale.astype(np.float64))


def requant_grad(op, args):
    (g, e), mask, real = args
    return [ig.scale_grad(g, e, *_factor(real), mask, channel_axis=1)]


def add_grad(op, args):
    (g, e), mask, ratios = args
    return [ig.scale_grad(g, e, *_factor(ratios[j:j + 1]), mask) for j in (0, 1)]


def avgpool_grad(op, args):
    (g, e), mask, real = args
    n, c, h, w = op.attr("input_shape")
    pooled, e2 = ig.scale_grad(g.reshape(n, c), e, *_factor(real), mask.reshape(n, c))
    return [(np.repeat(np.repeat(pooled[:, :, None, None], h, 2), w, 3), e2)]


def conv2d_grad_x(op, args):
    (g, e), w = args[:2]
    gx = torch.nn.grad.conv2d_input(tuple(op.attr("input_shape")), torch.from_numpy(w.astype(np.float64)),
                                    torch.from_numpy(g.astype(np.float64)), **_geometry(op))
    out = ig.normalize_int(_exact(gx), e)
    return [ig.add_grads(*args[2], *out) if len(args) == 3 else out]


def conv2d_grad_w(op, args):
    x, (g, e) = args
    o, i, kh, kw = op.attr("weight_shape")
    xz = torch.from_numpy(x.astype(np.float64) - op.attr("x_zero"))
    groups = op.attr("groups")
    kept = x.shape[1]
    if groups > 1:  # depthwise: channel c's rows only
        gw = torch.nn.grad.conv2d_weight(xz, (kept, 1, kh, kw), torch.from_numpy(g[:, :kept].astype(np.float64)),
                                         stride=op.attr("stride"), padding=op.attr("pad"), groups=kept)
    else:
        gw = torch.nn.grad.conv2d_weight(xz, (o, kept, kh, kw), torch.from_numpy(g.astype(np.float64)),
                                         stride=op.attr("stride"), padding=op.attr("pad"))
    return [(_exact(gw), e)]


def conv2d_grad_b(op, args):
    ((g, e),) = args
    return [(g[0].astype(np.int64).sum(axis=(1, 2)), e)]


def grad_sum(op, args):
    total = args[0]
    for a in args[1:]:
        total = ig.add_grads(*total, *a)
    return [total]


def linear_grad_x(op, args):
    g, w, scale = args
    g8, e = _loss(g, scale)
    return [ig.normalize_int(g8.astype(np.int64) @ w.astype(np.int64), e)]


def linear_grad_w(op, args):
    g, x, scale = args
    g8, e = _loss(g, scale)
    return [(g8.astype(np.int64).T @ (x.astype(np.int64) - op.attr("x_zero")), e)]


def linear_grad_b(op, args):
    g, scale = args
    g8, e = _loss(g, scale)
    return [(g8.astype(np.int64).sum(0), e)]


BACKWARD = {f.__name__: f for f in (requant_grad, add_grad, avgpool_grad, conv2d_grad_x, conv2d_grad_w,
                                     conv2d_grad_b, grad_sum, linear_grad_x, linear_grad_w, linear_grad_b)}

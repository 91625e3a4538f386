"""Insert the update ops: each trainable parameter's gradient output becomes an in-place update.

Why a pass: autodiff only says what the gradients are; what to do with them (QAS rescaling, SGD,
stochastic rounding with the counter-based RNG) is the optimizer's business, and it must be exactly
``Int8Optimizer(kind="sgd", momentum=0, qas=True, rule="sr")`` of the simulation at batch 1:
  weights  w[:kept] <- clamp(sr(w - lr * g * qas), -127, 127)   RNG (seed, step, tensor id, C index)
  biases   b <- sat32(b + floor(0.5 - lr * g * qas))
The QAS factors come from the one shared function (``mcutrain.train.int8_optim.qas_factors``) and
become float32 constants ``{param}.qas`` (one per gradient row: the kept channels of a depthwise
weight, every output channel otherwise). Tensor ids: the conv index, the classifier = number of convs.
Updates are appended at the end (the safe place); ``reorder`` moves each next to its gradient.
"""

from __future__ import annotations

from mcutrain.engine.autodiff import param_gradients
from mcutrain.engine.ir import Graph, Op, TensorInfo, make_attrs
from mcutrain.engine.passes.options import PassOptions
from mcutrain.train.int8_optim import qas_factors

UPDATE_KINDS = {"weight": "update_weight", "bias": "update_bias"}


def insert_updates(graph: Graph, options: PassOptions) -> Graph:
    """Gradient outputs -> update ops (phase update) + QAS constants; the gradients stop being outputs."""
    grads = param_gradients(graph)
    tensors, constants, updates = dict(graph.tensors), dict(graph.constants), []
    n_convs = sum(op.kind == "conv2d" for op in graph.ops)
    readers = _forward_readers(graph)
    for param, grad in grads.items():
        reader = _forward_reader(readers, param)
        qas = _qas_constant(graph, reader, param, grad, options)
        constants[f"{param}.qas"] = qas
        tensors[f"{param}.qas"] = TensorInfo(f"{param}.qas", qas.shape, "float32", "const")
        tensor_id = reader.attr("index") if reader.kind == "conv2d" else n_convs
        attrs = make_attrs(lr=float(options.lr), seed=int(options.seed), tensor_id=int(tensor_id),
                           rule=options.rule, kept_shape=graph.tensor(grad).shape)
        kind = UPDATE_KINDS[graph.tensor(param).role]
        updates.append(Op(f"{param}.update", kind, (param, grad, f"{param}.qas"), (), attrs, "update"))
    outputs = tuple(o for o in graph.outputs if o not in set(grads.values()))
    return graph.with_ops(graph.ops + tuple(updates), tensors=tensors, constants=constants, outputs=outputs)


def _forward_readers(graph: Graph) -> dict[str, list[Op]]:
    """Tensor -> the forward ops reading it, in one pass (not one scan of the graph per parameter)."""
    readers: dict[str, list[Op]] = {}
    for op in graph.ops:
        if op.phase == "forward":
            for name in dict.fromkeys(op.inputs):  # an op reading a tensor twice is one reader
                readers.setdefault(name, []).append(op)
    return readers


def _forward_reader(all_readers: dict[str, list[Op]], param: str) -> Op:
    """The one forward op that reads ``param`` (a conv or the classifier)."""
    readers = all_readers.get(param, [])
    if len(readers) != 1 or readers[0].kind not in ("conv2d", "linear"):
        raise ValueError(f"parameter {param!r} must be read by exactly one forward conv2d/linear op")
    return readers[0]


def _qas_constant(graph: Graph, reader: Op, param: str, grad: str, options: PassOptions):
    """The QAS factor per gradient row, float32; checks the gradient is a leading slice of the param."""
    p_shape, g_shape = graph.tensor(param).shape, graph.tensor(grad).shape
    if len(p_shape) != len(g_shape) or any(g > p for g, p in zip(g_shape, p_shape)):
        raise ValueError(f"gradient {grad!r} {g_shape} is not a leading slice of {param!r} {p_shape}")
    w_scale = graph.constants[f"{reader.name}.w_scale"]
    weight, bias = qas_factors(w_scale, reader.attr("x_scale"), reader.attr("frozen", ()), options.qas)
    factor = weight if graph.tensor(param).role == "weight" else bias
    return factor[: g_shape[0]].copy()

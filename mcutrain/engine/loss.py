"""The loss: softmax cross-entropy on the fp32 logits, appended to a forward graph.

Why one fused op (``softmax_ce``) with two outputs: the device needs the loss only to report it, but
it needs the logits' gradient (softmax - onehot, the mean over a batch of 1) to start the backward;
computing both from one softmax saves a pass and a buffer. The label is a graph input (int32 [1],
role ``label``) the caller feeds each step beside the image.
"""

from __future__ import annotations

from mcutrain.engine.ir import Graph, Op, TensorInfo
from mcutrain.engine.verify import verify

LABEL = "label"
LOSS = "loss"


def grad_name(tensor: str) -> str:
    """The name of the (total) gradient of ``tensor``: one convention for loss, autodiff and passes."""
    return f"{tensor}.grad"


def append_loss(graph: Graph) -> Graph:
    """``graph`` (one fp32 logits output) + a label input + ``softmax_ce`` -> outputs ``(loss,)``.

    The op is in the backward phase: it is where the gradient starts.
    """
    (logits,) = graph.outputs
    info = graph.tensor(logits)
    if info.dtype != "float32" or len(info.shape) != 2 or info.shape[0] != 1:
        raise ValueError(f"the loss needs fp32 logits [1, K] (batch 1), got {logits!r}: {info.type_str()}")
    tensors = dict(graph.tensors)
    tensors[LABEL] = TensorInfo(LABEL, (1,), "int32", "label")
    tensors[LOSS] = TensorInfo(LOSS, (1,), "float32", "loss")
    tensors[grad_name(logits)] = TensorInfo(grad_name(logits), info.shape, "float32", "gradient")
    op = Op("loss", "softmax_ce", (logits, LABEL), (LOSS, grad_name(logits)), phase="backward")
    return verify(graph.with_ops(graph.ops + (op,), tensors=tensors, inputs=graph.inputs + (LABEL,),
                                 outputs=(LOSS,)))

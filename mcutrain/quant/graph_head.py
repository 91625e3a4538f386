"""A new classifier head on an imported graph: the model's last fully connected layer, made for a new task.

Why: a user brings a model trained for someone else's classes (VWW's person / no person, CIFAR-10)
and wants it for theirs. Transfer learning replaces the classifier and trains it (and whatever part
of the backbone a sparse scheme selects). On a QGraph the classifier is the fully connected node
that computes the graph's output, directly or through a final softmax; nothing else may read it.

The new head is what the zoo's QModel gets (``mcutrain.quant.head``, shared, not copied): zero int8
weights and int32 biases, per-channel weight scales of HEAD_WEIGHT_RANGE / 127, on the same input
tensor as the old one (same features, same quantization), no fused activation.

Its output quantization is a decision of this module, since no trained value exists to calibrate it:
``scale = 2**-3 = 0.125, zero point 0``, i.e. logits from -16 to +15.875 in steps of 1/8.
- A zero point of 0 puts the untrained head's logits (all 0) exactly on a grid point, symmetric.
- +-16 holds the logits of a trained classifier: a softmax probability of 1 - 1e-6 needs a margin
  of about 14 for two classes; larger logits only matter to the softmax, which saturates anyway.
- Steps of 1/8 change a softmax probability by at most 1/32 (the slope p(1-p) <= 1/4): the int8
  output is a coarse read-out, while training uses the int32 accumulators as float logits
  (``graph_forward.fully_connected_logits``), which this scale does not limit.
- A power of two is exact in float32, which TFLite stores, so export then import gives the same scale.

A softmax after the old head is kept as a marker (training drops it, export writes it back): it now
reads the new logits' quantization and K classes; its output quantization (TFLite's 1/256, -128)
is unchanged.
"""

from __future__ import annotations

from dataclasses import replace

from mcutrain.errors import ModelError, one_line
from mcutrain.quant.graph import FullyConnected, GraphError, GraphTensor, Node, QGraph
from mcutrain.quant.head import head_classes, zero_head
from mcutrain.quant.qmodel import QTensor

HEAD_LOGIT_SCALE = 2.0**-3
"""Output scale of a new head's int8 logits (zero point 0): logits in [-16, 15.875] (module docstring)."""
HEAD_OUTPUT = QTensor(HEAD_LOGIT_SCALE, 0)


class NoClassifier(ModelError):
    """The graph does not end in a fully connected classifier that could be replaced."""


def classifier_node(graph: QGraph) -> tuple[int, Node, Node | None]:
    """(index, node) of the graph's classifier and its final softmax (or None).

    The classifier is the fully connected node whose output is the graph's output, or the input of a
    softmax whose output is the graph's output; no other node may read it.
    """
    producer = {n.output: (i, n) for i, n in enumerate(graph.nodes)}
    if graph.output not in producer:
        raise NoClassifier(f"the graph's output '{one_line(graph.output)}' is its input: no layers")
    last_index, last = producer[graph.output]
    softmax = None
    if last.kind == "softmax":
        softmax = last
        last_index, last = producer.get(last.inputs[0], (None, None))
    if last is None or last.kind != "fully_connected":
        ends = softmax if last is None else last
        raise NoClassifier(f"the graph ends in {ends.kind} '{one_line(ends.name)[:80]}', not in a fully "
                           f"connected classifier (optionally followed by a softmax); a new head replaces "
                           f"that layer, so this model cannot get one")
    readers = [n for n in graph.nodes if last.output in n.inputs and n is not softmax]
    if readers:
        raise NoClassifier(f"the classifier '{one_line(last.name)[:80]}' is also read by {readers[0].kind} "
                           f"'{one_line(readers[0].name)[:80]}'; only a final classifier can be replaced")
    return last_index, last, softmax


def graph_classes(graph: QGraph) -> int:
    """Number of classes the graph's classifier outputs."""
    _, node, _ = classifier_node(graph)
    return int(node.params.weight.shape[0])


def new_graph_head(graph: QGraph, classes: tuple[str, ...] | list[str]) -> QGraph:
    """``graph`` with its classifier replaced by a zero-initialised int8 one for ``classes``."""
    classes = head_classes(classes)
    index, old, softmax = classifier_node(graph)
    x = graph.tensor[old.inputs[0]]
    k, c = len(classes), int(old.params.weight.shape[1])
    weight, bias, w_scale = zero_head(k, c)
    head = FullyConnected(weight, bias, w_scale, x.q, HEAD_OUTPUT)
    _check_rescale(head)
    changed = {old.output: (k, HEAD_OUTPUT)}
    nodes = list(graph.nodes)
    nodes[index] = replace(old, params=head)
    if softmax is not None:
        changed[softmax.output] = (k, graph.tensor[softmax.output].q)
        s = nodes.index(softmax)
        nodes[s] = replace(softmax, params=replace(softmax.params, x=HEAD_OUTPUT))
    tensors = tuple(_resized(t, *changed[t.name]) if t.name in changed else t for t in graph.tensors)
    provenance = dict(graph.provenance, head="replaced")
    try:
        return QGraph(tensors, tuple(nodes), graph.input, graph.output, provenance).validate()
    except GraphError as err:  # e.g. a batch of [N, K] the old output did not have: say where
        raise NoClassifier(f"the new head does not fit the graph: {err}") from None


def _resized(t: GraphTensor, k: int, q: QTensor) -> GraphTensor:
    return GraphTensor(t.name, tuple(t.shape[:-1]) + (k,), q)


def _check_rescale(head: FullyConnected) -> None:
    """The head's fixed-point rescale x.scale * w_scale / y.scale must be encodable."""
    try:
        head.requant  # noqa: B018 - derives (and range-checks) the multipliers
    except (ValueError, OverflowError, ZeroDivisionError) as err:
        raise NoClassifier(f"the classifier's input scale {head.x.scale:.6g} cannot be rescaled to the new "
                           f"head's logits ({one_line(str(err))[:100]})") from None


def head_for_task(graph: QGraph, num_classes: int | None = None, classes: tuple[str, ...] | None = None,
                  force_new: bool = False) -> tuple[QGraph, tuple[str, ...]]:
    """(graph, class names) for a task of ``num_classes`` or ``classes`` (neither: the model's own task).

    The model's own head is kept when the count matches (named ``classes``, or 0..K-1) unless
    ``force_new``; otherwise it is replaced by ``new_graph_head``. Provenance ``head`` says which.
    """
    from mcutrain.data.limits import MAX_CLASSES

    wanted = len(classes) if classes is not None else num_classes
    if wanted is not None and not 2 <= wanted <= MAX_CLASSES:
        raise ModelError(f"{wanted} classes: a classifier needs 2 to {MAX_CLASSES}")
    shape = graph.tensor[graph.output].shape
    own = int(shape[1]) if len(shape) == 2 else None
    if not force_new and (wanted is None or wanted == own):
        names = classes if classes is not None else tuple(str(i) for i in range(_own_classes(graph)))
        return QGraph(graph.tensors, graph.nodes, graph.input, graph.output,
                      dict(graph.provenance, head="kept")), tuple(names)
    names = classes if classes is not None else tuple(str(i) for i in range(wanted or _own_classes(graph)))
    return new_graph_head(graph, names), tuple(names)


def _own_classes(graph: QGraph) -> int:
    """K of the graph's [N, K] output: the classes of the model as it is."""
    shape = graph.tensor[graph.output].shape
    if len(shape) != 2 or shape[1] < 2:
        raise NoClassifier(f"the model's output '{one_line(graph.output)[:80]}' has shape {list(shape)}; "
                           f"mcutrain trains classifiers, whose output is [N, K] with K >= 2 classes")
    return int(shape[1])
